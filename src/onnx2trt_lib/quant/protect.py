"""Accuracy protection: keep the fewest layers in float until the INT8 model is close enough to FP32.

Steps (each one visible in `protect` below):

1. Quantize everything; if the criterion already holds, stop (nothing excluded).
2. Rank the quantized weighted layers (Conv/ConvTranspose/Gemm/MatMul) by sensitivity: build a
   model where only that layer is INT8 and measure the outputs' SQNR against FP32; the lower,
   the more the layer alone hurts.
3. Find the smallest k such that keeping the k most sensitive layers in float meets the
   criterion: bisection over k (log2 N evaluations; assumes more float layers never hurt) or
   greedy (add one layer at a time).
4. Refine: try giving each kept-float layer back to INT8, least sensitive first; keep the ones
   that do not break the criterion.

The criterion is label-free by default: on the held-out batches, every float output's SQNR
against the FP32 model is at least `min_sqnr_db` (default 20 dB: quantization noise at most 1% of
the output's power). Bool and integer outputs (Greater, ArgMax) are no signal and are left out,
as the report's notes say; NaN or Inf in an FP32 output is refused, since no SQNR is defined. With a user `metric(model) -> score` (higher is better) it is instead
`score >= fp32 score - allowed_drop`. The data should be held out from the batches that made the
ranges, otherwise the criterion flatters the ranges it was tuned on.

What the bound means in practice (benchmarks/results/quant.md): on a digits CNN, 23.5 dB of
logit SQNR cost 0.4 points of top-1; on PP-OCRv4 recognition (CTC over softmax), 20 dB cost
3.5 points of exact-match and 25 dB 0.5 point. For sequence/detection models prefer a task
metric, or raise the bound (`Criterion(min_sqnr_db=25)`, CLI `--min-sqnr 25`).
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import UsageError
from .accuracy import (
    WEIGHTED_OPS,
    as_batches,
    check_finite,
    int8_mac_share,
    node_key,
    run,
    sqnr_db,
    weighted_macs,
)

log = logging.getLogger(__name__)

DEFAULT_MIN_SQNR_DB = 20.0
STRATEGIES = ("bisect", "greedy")
REFINE_LIMIT = 16  # refine only small exclusion sets: each try is one evaluation


@dataclass(frozen=True)
class Criterion:
    """Label-free: min over float outputs of SQNR(FP32, INT8) in dB must reach `min_sqnr_db`."""

    min_sqnr_db: float = DEFAULT_MIN_SQNR_DB

    def describe(self) -> str:
        return f"every output's SQNR vs FP32 >= {self.min_sqnr_db:g} dB on the held-out data"


@dataclass(frozen=True)
class ExcludedLayer:
    node: str
    op: str
    rank: int  # 1 = most sensitive
    sqnr_alone_db: float  # output SQNR when only this layer is INT8
    reason: str


@dataclass(frozen=True)
class ProtectionReport:
    """What protection measured and kept in float, and why."""

    criterion: str
    before: float  # criterion value (dB or metric score) of the full INT8 model
    after: float  # of the written mixed-precision model
    target: float
    met: bool
    excluded: tuple[ExcludedLayer, ...] = ()
    ranking: tuple[tuple[str, float], ...] = ()  # (node, SQNR alone) most sensitive first
    evaluations: int = 0
    int8_mac_share_before: float = 1.0
    int8_mac_share_after: float = 1.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        def fin(x: float) -> float | str:
            return x if math.isfinite(x) else str(x)

        return {
            "criterion": self.criterion,
            "before": fin(self.before),
            "after": fin(self.after),
            "target": fin(self.target),
            "met": self.met,
            "excluded": [
                {**e.__dict__, "sqnr_alone_db": fin(e.sqnr_alone_db)} for e in self.excluded
            ],
            "ranking": [[n, fin(s)] for n, s in self.ranking],
            "evaluations": self.evaluations,
            "int8_mac_share_before": self.int8_mac_share_before,
            "int8_mac_share_after": self.int8_mac_share_after,
            "notes": list(self.notes),
        }

    def summary_lines(self) -> list[str]:
        lines = [
            f"protection: {self.criterion}: full INT8 {self.before:.4g} -> mixed {self.after:.4g} "
            f"(target {self.target:.4g}, {'met' if self.met else 'NOT met'}, {self.evaluations} evaluations)",
            f"  INT8 share of Conv/Gemm/MatMul MACs: {self.int8_mac_share_before:.1%} -> {self.int8_mac_share_after:.1%}",
        ]
        lines += [f"  kept in float: {e.node} ({e.op}): {e.reason}" for e in self.excluded]
        lines += [f"  note: {n}" for n in self.notes]
        return lines

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(e.node)}</td><td>{e.op}</td><td>{e.rank}</td><td>{e.sqnr_alone_db:.2f}</td>"
            f"<td>{html.escape(e.reason)}</td></tr>"
            for e in self.excluded
        )
        return (
            f"<p>{html.escape(self.criterion)}: {self.before:.4g} &rarr; {self.after:.4g} "
            f"(target {self.target:.4g}, {'met' if self.met else 'not met'}); INT8 MAC share "
            f"{self.int8_mac_share_before:.1%} &rarr; {self.int8_mac_share_after:.1%}</p>"
            "<table><tr><th>kept in float</th><th>op</th><th>rank</th><th>SQNR alone dB</th><th>why</th></tr>"
            f"{rows}</table>"
        )


class _Evaluator:
    """Builds the Q/DQ model for a set of float layers and scores it; counts evaluations."""

    def __init__(self, model, options, batches, criterion, metric, allowed_drop):
        from .api import insert_qdq

        self._insert = insert_qdq
        self.model, self.options, self.batches = model, dict(options), batches
        self.metric = metric
        self.count = 0
        self.skipped: list[str] = []  # outputs left out of the bound: not float
        if metric is None:
            ref = run(model, batches)
            outputs = [o.name for o in model.graph.output]
            self.names = [n for n in outputs if ref[n][0].dtype.kind == "f"]
            self.skipped = [f"{n} ({ref[n][0].dtype})" for n in outputs if n not in self.names]
            if not self.names:
                raise UsageError(
                    f"no float output to bound ({', '.join(self.skipped)}): SQNR needs float outputs; "
                    "pass a metric, or quantize without protection"
                )
            check_finite(ref, self.names, "the FP32 model")
            self.ref = {n: np.concatenate([a.reshape(-1) for a in ref[n]]) for n in self.names}
            self.target = criterion.min_sqnr_db
        else:
            self.ref = {}
            self.fp32_score = float(metric(model))
            self.target = self.fp32_score - allowed_drop

    def build(self, float_layers: Collection[str]) -> onnx.ModelProto:
        return self._insert(self.model, exclude_nodes=list(float_layers), **self.options)[0]

    def label_free(self, qmodel: onnx.ModelProto) -> float:
        out = run(qmodel, self.batches)
        values = [
            sqnr_db(self.ref[n], np.concatenate([a.reshape(-1) for a in out[n]]))
            for n in self.names
        ]
        return min(
            -math.inf if math.isnan(v) else v for v in values
        )  # NaN from INT8 fails, whatever the order

    def score(self, float_layers: Collection[str]) -> float:
        self.count += 1
        qmodel = self.build(float_layers)
        return float(self.metric(qmodel)) if self.metric is not None else self.label_free(qmodel)

    def ok(self, value: float) -> bool:
        return value >= self.target


def protect(
    model: onnx.ModelProto,
    options: Mapping,
    data,
    *,
    exclude: Collection[str] = (),
    criterion: Criterion | None = None,
    metric: Callable[[onnx.ModelProto], float] | None = None,
    allowed_drop: float = 0.01,
    strategy: str = "bisect",
    ranking_batches: int = 2,
) -> ProtectionReport:
    """Find the smallest set of layers to keep in float so the criterion holds (see module doc).

    `options` are InsertQdqPass options (ranges, op_types, ...); `exclude` names layers the user
    keeps in float anyway. `ranking_batches` bounds the data used for the per-layer ranking.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"protection strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    criterion = criterion or Criterion()
    model, named = name_weighted_nodes(model)
    batches = as_batches(data, model)
    ev = _Evaluator(model, options, batches, criterion, metric, allowed_drop)
    what = (
        criterion.describe()
        if metric is None
        else f"metric >= FP32 metric {ev.fp32_score:.6g} - {allowed_drop:g}"
    )
    user = list(exclude)
    macs = weighted_macs(model, _one_sample(model, batches[0]))
    notes: list[str] = []
    if ev.skipped:
        notes.append(f"not in the SQNR bound (not float): {', '.join(ev.skipped)}")
    if named:
        notes.append(
            f"unnamed layers named after their op and output: {', '.join(named[:5])}"
            f"{' ...' if len(named) > 5 else ''}"
        )

    # 1. everything INT8
    full = ev.build(user)
    before = ev.score(user)
    share_before = int8_mac_share(full, macs)
    if ev.ok(before):
        log.info("protection: full INT8 meets the criterion (%.4g >= %.4g)", before, ev.target)
        return ProtectionReport(
            what,
            before,
            before,
            ev.target,
            True,
            (),
            (),
            ev.count,
            share_before,
            share_before,
            tuple(notes),
        )

    # 2. sensitivity ranking: only one layer INT8 at a time (label-free, on a few batches)
    candidates = _quantized_layers(full)
    rank_ev = _Evaluator(model, options, batches[:ranking_batches], Criterion(), None, 0.0)
    alone = {}
    for node in candidates:
        alone[node] = rank_ev.label_free(rank_ev.build([c for c in candidates if c != node] + user))
    ev.count += len(candidates)
    ranking = sorted(candidates, key=lambda n: (alone[n], n))
    log.info("protection: %d layers ranked; most sensitive: %s", len(ranking), ranking[:5])

    # 3. smallest k with the top-k layers in float
    results: dict[int, float] = {0: before}

    def value(k: int) -> float:
        if k not in results:
            results[k] = ev.score(ranking[:k] + user)
        return results[k]

    n = len(ranking)
    if strategy == "greedy":
        k = next((k for k in range(1, n + 1) if ev.ok(value(k))), n)
    else:
        lo, hi = 0, n  # value(lo) fails; find the smallest passing k in (lo, hi]
        if not ev.ok(value(n)):
            notes.append(
                "criterion not met even with every layer in float (the rest of the error is elsewhere)"
            )
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if ev.ok(value(mid)):
                    hi = mid
                else:
                    lo = mid
        k = hi
    kept = ranking[:k]

    # 4. refine: give layers back to INT8 when the criterion still holds without them
    after = value(k)
    if ev.ok(after) and 1 < len(kept) <= REFINE_LIMIT:
        for node in reversed(list(kept)):
            trial = [c for c in kept if c != node]
            v = ev.score(trial + user)
            if ev.ok(v):
                kept, after = trial, v
    final = ev.build(kept + user)
    ops = {node_key(nd): nd.op_type for nd in model.graph.node}
    excluded = tuple(
        ExcludedLayer(
            node,
            ops.get(node, "?"),
            ranking.index(node) + 1,
            alone[node],
            f"sensitivity rank {ranking.index(node) + 1}/{n}: INT8 alone gives output SQNR {alone[node]:.1f} dB; "
            f"needed to reach the criterion",
        )
        for node in kept
    )
    report = ProtectionReport(
        what,
        before,
        after,
        ev.target,
        ev.ok(after),
        excluded,
        tuple((r, alone[r]) for r in ranking),
        ev.count,
        share_before,
        int8_mac_share(final, macs),
        tuple(notes),
    )
    log.info("protection: kept %d layer(s) in float: %s", len(kept), kept)
    return report


def name_weighted_nodes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy whose unnamed Conv/Gemm/MatMul nodes are named `<op>:<first output>` (the MAC key).

    Layers are kept in float by node name, so an unnamed layer could not be protected. Output
    names are unique, so the names are stable across runs; `model` itself is not changed.
    """
    taken = {n.name for n in model.graph.node}
    if all(n.name or n.op_type not in WEIGHTED_OPS for n in model.graph.node):
        return model, []
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    named = []
    for node in copy.graph.node:
        if not node.name and node.op_type in WEIGHTED_OPS:
            name = base = node_key(node)
            suffix = 1
            while name in taken:
                name, suffix = f"{base}#{suffix}", suffix + 1
            node.name = name
            taken.add(name)
            named.append(name)
    return copy, named


def _one_sample(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One row where the batch dim is dynamic (MAC shares do not depend on it), the whole feed where it is fixed."""
    dims = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
    fixed = {k for k, d in dims.items() if d and d[0].HasField("dim_value")}
    return {k: v if k in fixed or np.ndim(v) == 0 else v[:1] for k, v in feed.items()}


def _quantized_layers(qmodel: onnx.ModelProto) -> list[str]:
    """Names of weighted nodes whose data and weight inputs both come from DequantizeLinear."""
    producers = {out: n.op_type for n in qmodel.graph.node for out in n.output}
    found = []
    for n in qmodel.graph.node:
        if n.op_type in WEIGHTED_OPS and n.name:  # unnamed ones were named by name_weighted_nodes
            if all(producers.get(t) == "DequantizeLinear" for t in n.input[:2]):
                found.append(n.name)
    return found
