"""Accuracy protection: keep the fewest layers in float until the INT8 model agrees with FP32.

Steps (each one visible in `protect` below):

1. Quantize everything; if the criterion already holds, stop (nothing excluded).
2. Rank the quantized weighted layers (Conv/ConvTranspose/Gemm/MatMul) by sensitivity: only that
   layer INT8, output SQNR against FP32 on a few samples; the lower, the more it hurts alone.
3. Find the smallest k such that keeping the k most sensitive layers in float meets the
   criterion: bisection over k (log2 N evaluations; assumes more float layers never hurt) or
   greedy (add one layer at a time).
4. Refine: give kept-float layers back to INT8 in groups, least sensitive first, splitting a
   group in halves where returning it breaks the criterion (at most REFINE_BUDGET tries).
5. Write the model and measure it once more as written (the number the report gives).

Every evaluation of steps 1-4 runs in one ONNX Runtime session of the switch model
(quant.switch): the full Q/DQ model with a bool switch per layer, so a question costs one
inference, not a model export and a session. With a user `metric(model) -> score` (higher is
better) the criterion is `score >= fp32 score - allowed_drop` and each evaluation writes a model.

The label-free criterion (quant.agreement) compares with FP32 on what the output is used for:
top-1 agreement for classifiers and CTC sequences, matched boxes for YOLO heads, SQNR otherwise
(default 20 dB: quantization noise at most 1% of the output's power). Bool and integer outputs
(Greater, ArgMax) are no signal and are left out, as the report's notes say; NaN or Inf in an
FP32 output is refused. The data should be held out from the batches that made the ranges,
otherwise the criterion flatters the ranges it was tuned on.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import UsageError
from .accuracy import (
    WEIGHTED_OPS,
    Batch,
    _cat,
    as_batches,
    check_finite,
    int8_mac_share,
    node_key,
    rows_per_batch,
    run,
    sqnr_db,
    weighted_macs,
)
from .agreement import DEFAULT_MIN_SQNR_DB, Criterion, Judge
from .qdq import insert_qdq
from .switch import SwitchSession, quantized_layers

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MIN_SQNR_DB", "Criterion", "ProtectionReport", "protect"]

STRATEGIES = ("bisect", "greedy")
REFINE_BUDGET = 24  # tries to give kept layers back to INT8: each is one evaluation
RANKING_SAMPLES = (
    8  # rows for the per-layer ranking at most: SQNR over whole outputs is stable on a few
)
RANKING_PASSES = 4  # and the ranking costs at most about this many passes over the data


@dataclass(frozen=True)
class ExcludedLayer:
    node: str
    op: str
    rank: int  # 1 = most sensitive
    sqnr_alone_db: float  # output SQNR when only this layer is INT8
    reason: str


@dataclass(frozen=True)
class ProtectionReport:
    """What protection measured and kept in float, and why.

    `before`/`after` are the criterion's value (agreement share, dB, or metric score) for full
    INT8 and for the written model, measured on the data given; `kind` says which.
    """

    criterion: str
    before: float  # criterion value of the full INT8 model
    after: float  # of the written mixed-precision model
    target: float
    met: bool
    excluded: tuple[ExcludedLayer, ...] = ()
    ranking: tuple[tuple[str, float], ...] = ()  # (node, SQNR alone) most sensitive first
    evaluations: int = 0
    int8_mac_share_before: float = 1.0
    int8_mac_share_after: float = 1.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    kind: str = "sqnr"  # sqnr | top1 | boxes | metric
    searched: bool = True  # False: measured only (--no-protect)
    samples: int = 0

    def fmt(self, value: float) -> str:
        if self.kind == "sqnr":
            return f"{value:.2f} dB"
        if self.kind == "metric":
            return f"{value:.4g}"
        return f"{value:.2%}"

    def to_dict(self) -> dict:
        def fin(x: float) -> float | str:
            return x if math.isfinite(x) else str(x)

        return {
            "criterion": self.criterion,
            "kind": self.kind,
            "searched": self.searched,
            "samples": self.samples,
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
        share = f"INT8 share of Conv/Gemm/MatMul MACs: {self.int8_mac_share_after:.1%}"
        if not self.searched:
            verdict = "meets" if self.met else "does NOT meet"
            lines = [
                f"agreement with FP32 ({self.criterion}; {self.samples} samples): "
                f"{self.fmt(self.after)}, {verdict} the target {self.fmt(self.target)} (protection off)",
                f"  {share}",
            ]
        else:
            lines = [
                f"protection: {self.criterion}: full INT8 {self.fmt(self.before)} -> written "
                f"{self.fmt(self.after)} (target {self.fmt(self.target)}, "
                f"{'met' if self.met else 'NOT met'}; {self.samples} samples, {self.evaluations} evaluations)",
                f"  {share} (full INT8: {self.int8_mac_share_before:.1%})",
            ]
        lines += [
            f"  kept in float (protected): {e.node} ({e.op}): {e.reason}" for e in self.excluded
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return lines

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(e.node)}</td><td>{e.op}</td><td>{e.rank}</td><td>{e.sqnr_alone_db:.2f}</td>"
            f"<td>{html.escape(e.reason)}</td></tr>"
            for e in self.excluded
        )
        return (
            f"<p>{html.escape(self.criterion)}: {self.fmt(self.before)} &rarr; {self.fmt(self.after)} "
            f"(target {self.fmt(self.target)}, {'met' if self.met else 'not met'}); INT8 MAC share "
            f"{self.int8_mac_share_before:.1%} &rarr; {self.int8_mac_share_after:.1%}</p>"
            "<table><tr><th>kept in float</th><th>op</th><th>rank</th><th>SQNR alone dB</th><th>why</th></tr>"
            f"{rows}</table>"
        )


def _rows(batches: Sequence[Batch], want: int, fixed: bool) -> list[Batch]:
    """The first `want` rows of the data; whole batches where the model's batch is `fixed`."""
    taken, rows = [], 0
    for feed in batches:
        n = max((len(v) for v in feed.values() if np.ndim(v)), default=1)
        if not fixed and rows + n > want:
            feed = {k: v[: want - rows] if np.ndim(v) else v for k, v in feed.items()}
            n = want - rows
        taken.append(feed)
        rows += n
        if rows >= want:
            break
    return taken


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
    ranking_samples: int | None = None,
    search: bool = True,
    reference: onnx.ModelProto | None = None,
) -> ProtectionReport:
    """Find the smallest set of layers to keep in float so the criterion holds (see module doc).

    `options` are InsertQdqPass options (ranges, op_types, ...); `exclude` names layers the user
    keeps in float anyway. `ranking_samples` is the rows of the per-layer ranking (default: up
    to RANKING_SAMPLES, fewer when the layers are many, so ranking costs ~RANKING_PASSES passes).
    `search=False` only measures the full INT8 model (what --no-protect reports). `reference`:
    the FP32 model to agree with when `model` is a rewritten one (bias correction changes it).
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"protection strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    criterion = criterion or Criterion()
    model, named = name_weighted_nodes(model)
    batches = as_batches(data, model)
    samples = sum(max((len(v) for v in b.values() if np.ndim(v)), default=1) for b in batches)
    user = list(exclude)
    notes: list[str] = []
    if named:
        notes.append(
            f"unnamed layers named after their op and output: {', '.join(named[:5])}"
            f"{' ...' if len(named) > 5 else ''}"
        )

    def build(float_layers: Collection[str]) -> onnx.ModelProto:
        return insert_qdq(model, exclude_nodes=list(float_layers) + user, **options)[0]

    full = build([])
    layers = quantized_layers(full)
    macs = weighted_macs(model, _one_sample(model, batches[0]))
    share_before = int8_mac_share(full, macs)
    if metric is None:
        ref_out = run(reference if reference is not None else model, batches)
        outputs = [o.name for o in model.graph.output]
        names = [n for n in outputs if ref_out[n][0].dtype.kind == "f"]
        skipped = [f"{n} ({ref_out[n][0].dtype})" for n in outputs if n not in names]
        if skipped:
            notes.append(f"not compared (not float): {', '.join(skipped)}")
        if not names:
            raise UsageError(
                f"no float output to compare ({', '.join(skipped)}): agreement needs float outputs; "
                "pass a metric, or quantize without protection"
            )
        check_finite(ref_out, names, "the FP32 model")
        ref = {n: _cat(ref_out[n]) for n in names}
        judge = Judge(ref, criterion)
        what, kind, target = judge.describe(), judge.kind, judge.target
        measure_model = lambda q: judge.score({n: _cat(v) for n, v in run(q, batches).items()})  # noqa: E731
    else:
        fp32_score = float(metric(model))
        what = f"metric >= FP32 metric {fp32_score:.6g} - {allowed_drop:g}"
        kind, target = "metric", fp32_score - allowed_drop
        measure_model = lambda q: float(metric(q))  # noqa: E731

    def ok(value: float) -> bool:
        return value >= target

    if not search or not layers:
        before = measure_model(full)
        return ProtectionReport(
            what,
            before,
            before,
            target,
            ok(before),
            (),
            (),
            1,
            share_before,
            share_before,
            tuple(notes),
            kind,
            search,
            samples,
        )

    # one session answers every question about label-free agreement
    switch = SwitchSession(full, layers, options["ranges"], options.get("exclude_tensors", ()))
    count = 0

    def evaluate(float_layers: Collection[str]) -> float:
        nonlocal count
        count += 1
        if metric is not None:
            return float(metric(build(float_layers)))
        floats = set(float_layers)
        int8 = [c for c in layers if c not in floats]
        if judge.kind != "top1" or not early_exit:
            return judge.score(switch.run(int8, batches))
        # top1: stop at the batch where more rows disagree than the target allows
        allowed = math.floor((1.0 - target) * rows_total + 1e-9)
        bad = start = 0
        for feed in batches:
            out = switch.run_batch(int8, feed)
            bad += judge.failing_rows(out, start)
            start += len(next(iter(out.values())))
            if bad > allowed:
                return (rows_total - bad) / rows_total  # at most this: fails the target
        return (rows_total - bad) / rows_total

    # 1. everything INT8 (measured on all the data: the report's "before")
    early_exit = False
    before = evaluate([])
    early_exit = metric is None and all(len(v) == len(ref[names[0]]) for v in ref.values())
    rows_total = len(ref[names[0]]) if metric is None else 0
    if ok(before):
        log.info("protection: full INT8 meets the criterion (%.4g >= %.4g)", before, target)
        return ProtectionReport(
            what,
            before,
            before,
            target,
            True,
            (),
            (),
            count,
            share_before,
            share_before,
            tuple(notes),
            kind,
            True,
            samples,
        )

    # 2. sensitivity ranking: only one layer INT8 at a time, output SQNR on a few rows
    if ranking_samples is None:
        ranking_samples = max(2, min(RANKING_SAMPLES, -(-RANKING_PASSES * samples // len(layers))))
    few = _rows(batches, ranking_samples, rows_per_batch(model, batch_size=0) > 0)
    few_ref = switch.run([], few)
    float_out = [n for n in few_ref if few_ref[n].dtype.kind == "f"]
    alone = {}
    for node in layers:
        out = switch.run([node], few)
        if metric is None:
            alone[node] = judge.sensitivity_db(few_ref, out)
        else:
            alone[node] = min(sqnr_db(few_ref[n], out[n]) for n in float_out)
            alone[node] = -math.inf if math.isnan(alone[node]) else alone[node]
    count += len(layers)
    ranking = sorted(layers, key=lambda n: (alone[n], n))
    log.info("protection: %d layers ranked; most sensitive: %s", len(ranking), ranking[:5])

    # 3. smallest k with the top-k layers in float
    results: dict[int, float] = {0: before}

    def value(k: int) -> float:
        if k not in results:
            results[k] = evaluate(ranking[:k])
        return results[k]

    n = len(ranking)
    if strategy == "greedy":
        k = next((k for k in range(1, n + 1) if ok(value(k))), n)
    else:
        lo, hi = 0, n  # value(lo) fails; find the smallest passing k in (lo, hi]
        if not ok(value(n)):
            notes.append(
                "criterion not met even with every layer in float (the rest of the error is elsewhere)"
            )
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if ok(value(mid)):
                    hi = mid
                else:
                    lo = mid
        k = hi
    kept = ranking[:k]

    # 4. refine: give layers back to INT8 when the criterion still holds without them, in
    #    groups (least sensitive first) split in halves where a group fails: few tries when few
    #    of the kept layers matter (failing tries of top1 stop early, so they are cheap)
    tries = 0

    def give_back(group: list[str]) -> None:
        nonlocal kept, tries
        if not group or tries >= REFINE_BUDGET:
            return
        trial = [c for c in kept if c not in group]
        tries += 1
        if ok(evaluate(trial)):
            kept = trial
        elif len(group) > 1:
            half = len(group) // 2
            give_back(group[:half])
            give_back(group[half:])

    if ok(value(k)) and len(kept) > 1:
        order = list(reversed(kept))  # all of them at once is full INT8, which failed
        give_back(order[: len(order) // 2])
        give_back(order[len(order) // 2 :])

    # 5. the written model, measured as written
    final = build(kept)
    after = measure_model(final)
    ops = {node_key(nd): nd.op_type for nd in model.graph.node}
    excluded = tuple(
        ExcludedLayer(
            node,
            ops.get(node, "?"),
            ranking.index(node) + 1,
            alone[node],
            f"sensitivity rank {ranking.index(node) + 1}/{n}: INT8 alone gives output SQNR {alone[node]:.1f} dB",
        )
        for node in kept
    )
    log.info("protection: kept %d layer(s) in float: %s", len(kept), kept)
    return ProtectionReport(
        what,
        before,
        after,
        target,
        ok(after),
        excluded,
        tuple((r, alone[r]) for r in ranking),
        count + 1,
        share_before,
        int8_mac_share(final, macs),
        tuple(notes),
        kind,
        True,
        samples,
    )


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
