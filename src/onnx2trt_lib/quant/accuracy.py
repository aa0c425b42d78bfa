"""How far a quantized (or FP16) model is from its FP32 original, per output and per tensor.

Both models run in ONNX Runtime (CPU) on the same batches. Per output: max abs and max
relative error, cosine similarity and SQNR. Per tensor (the layer-wise view users ask for when
an INT8 model is off): every tensor the second model quantizes — the output of each
DequantizeLinear fed by an activation — is exposed as an extra graph output and compared with
the same tensor of the FP32 model; worst SQNR first, so the first rows say where accuracy goes.

SQNR (dB) = 10 log10(sum ref^2 / sum (ref - test)^2), over all elements of all batches.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import onnx

from .._optional import onnxruntime
from ..errors import CalibrationError, ModelLoadError, RuntimeExecutionError, UsageError
from ..runtime.base import in_float_type
from ..runtime.ort_runner import ORT_TYPES

log = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
DataLike = np.ndarray | Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]]
DEFAULT_BATCH = 64
_POOLS: dict[int, ThreadPoolExecutor] = {}


def as_batches(
    data: DataLike, model: onnx.ModelProto, *, batch_size: int = DEFAULT_BATCH
) -> list[Batch]:
    """Normalize data to a list of {input name: array} feeds.

    An array goes to the model's only input, split along axis 0 in `batch_size` chunks when
    that dim is dynamic; a dict is one feed; any other iterable yields feeds.
    """
    inputs = _data_inputs(model)
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise UsageError(
                f"an array was given but the model has {len(inputs)} inputs ({names}); pass dicts"
            )
        step = rows_per_batch(model, batch_size=batch_size)
        batches = [{inputs[0].name: data[i : i + step]} for i in range(0, len(data), step)]
    elif isinstance(data, Mapping):
        batches = [{k: np.asarray(v) for k, v in data.items()}]
    else:
        batches = [{k: np.asarray(v) for k, v in feed.items()} for feed in data]
    if not batches:
        raise UsageError("no data batches were given")
    batches = _fit_fixed_batch(batches, inputs)
    _check_feed_shapes(batches, inputs)
    return batches


def _fit_fixed_batch(batches: list[Batch], inputs: Sequence[onnx.ValueInfoProto]) -> list[Batch]:
    """A model exported with a fixed batch N takes N rows a feed: a short last feed is left out
    (with a warning, as calibration does); any other count is a clear error, not ONNX Runtime's."""
    found = _fixed_batch(inputs)
    if found is None:
        return batches
    name, fixed = found
    rows = [
        np.shape(feed[name])[0] if name in feed and np.ndim(feed[name]) else None
        for feed in batches
    ]
    if rows[-1] is not None and rows[-1] < fixed and all(r == fixed for r in rows[:-1]):
        if len(batches) == 1:
            raise DataShapeError(
                f"{rows[-1]} sample(s) are fewer than the model's fixed batch of {fixed} (input {name!r})"
            )
        log.warning(
            "the last %d sample(s) do not fill the model's fixed batch of %d and are not used",
            rows[-1],
            fixed,
        )
        batches = batches[:-1]
    for index, count in enumerate(rows[: len(batches)]):
        if count is not None and count != fixed:
            raise DataShapeError(
                f"batch {index}: input {name!r} gets {count} rows but the model's batch is fixed at {fixed}"
            )
    return batches


def _data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    init_names = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init_names]


def rows_per_batch(model: onnx.ModelProto, *, batch_size: int = DEFAULT_BATCH) -> int:
    """Rows per feed: the fixed batch dim of the model's first input that has one, else `batch_size`.

    A model exported with a fixed batch N takes exactly N rows; any other count fails in ONNX Runtime.
    """
    found = _fixed_batch(_data_inputs(model))
    return found[1] if found else batch_size


def _fixed_batch(inputs: Sequence[onnx.ValueInfoProto]) -> tuple[str, int] | None:
    """(name, N) of the first input whose batch dim is a fixed N, if any."""
    for info in inputs:
        dims = info.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return info.name, dims[0].dim_value
    return None


class DataShapeError(UsageError):
    """Data whose arrays do not fit the model's inputs (rank or a fixed dimension)."""


def _check_feed_shapes(batches: Sequence[Batch], inputs: Sequence[onnx.ValueInfoProto]) -> None:
    """Say which input the data does not fit, before ONNX Runtime fails with a less clear message.

    Only rank and fixed non-batch dims are checked: the batch dim may differ (last chunk).
    """
    for index, feed in enumerate(batches):
        for info in inputs:
            if info.name not in feed or not info.type.tensor_type.HasField("shape"):
                continue
            dims = info.type.tensor_type.shape.dim
            shape = feed[info.name].shape
            expected = (
                "x".join(str(d.dim_value) if d.HasField("dim_value") else "?" for d in dims)
                or "scalar"
            )
            fixed_mismatch = any(
                d.HasField("dim_value") and d.dim_value != got
                for d, got in list(zip(dims, shape, strict=False))[1:]
            )
            if len(shape) != len(dims) or fixed_mismatch:
                got = "x".join(map(str, shape)) or "scalar"
                raise DataShapeError(
                    f"batch {index}: input {info.name!r} gets shape {got} but the model expects {expected}"
                )


def session(
    model: onnx.ModelProto, *, extra_outputs: Sequence[str] = (), threads: int | None = None
):
    """An ONNX Runtime CPU session; `extra_outputs` are intermediate tensors exposed as outputs;
    `threads`: intra-op threads (ONNX Runtime's default: one per physical core)."""
    ort = onnxruntime()
    if extra_outputs:
        model = _with_outputs(model, extra_outputs)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    # basic optimisations only: the extended ones fuse away the Q/DQ nodes we want to observe
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    from .._io import ort_source

    try:
        with ort_source(model) as source:
            return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except ModelLoadError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeExecutionError(f"ONNX Runtime cannot load the model: {first}") from None


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    from .._weights import infer_shapes

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:  # on a copy without the large weights (past 2 GiB onnx could not serialise it)
        inferred = infer_shapes(model)
    except Exception:  # inference is only for types; ORT can still infer them itself
        inferred = copy
    types = {
        v.name: v.type
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name in present:
            continue
        info = onnx.ValueInfoProto(name=name)
        if name in types:
            info.type.CopyFrom(types[name])
        copy.graph.output.append(info)
    return copy


def run_pool(workers: int) -> ThreadPoolExecutor:
    """A kept pool of `workers` threads for ONNX Runtime runs side by side (it releases the GIL)."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="ort-runs")
    return _POOLS[workers]


def run(
    model: onnx.ModelProto,
    batches: Sequence[Batch],
    *,
    extra_outputs: Sequence[str] = (),
    workers: int = 1,
) -> dict[str, list[np.ndarray]]:
    """Outputs (and exposed tensors) by name, one array per batch; `workers` > 1: that many
    batches at a time, each run on its share of the cores (the same outputs)."""
    from ..calib._threads import ort_threads

    cores = ort_threads()
    workers = max(1, min(workers, cores, len(batches)))
    sess = session(
        model, extra_outputs=extra_outputs, threads=cores // workers if workers > 1 else None
    )
    names = [o.name for o in sess.get_outputs()]
    types = {i.name: ORT_TYPES.get(i.type) for i in sess.get_inputs()}

    def one(item: tuple[int, Batch]) -> list[np.ndarray]:
        index, feed = item
        try:
            return sess.run(
                names, {k: in_float_type(v, types[k]) for k, v in feed.items() if k in types}
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeExecutionError(f"batch {index}: ONNX Runtime failed: {first}") from None

    items = list(enumerate(batches))
    done = list(run_pool(workers).map(one, items)) if workers > 1 else [one(i) for i in items]
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for values in done:
        for name, value in zip(names, values, strict=True):
            out[name].append(value)
    return out


def check_finite(
    outputs: Mapping[str, Sequence[np.ndarray]], names: Iterable[str], what: str
) -> None:
    """Refuse NaN/Inf in reference outputs: SQNR against them is NaN, and min() over NaN depends on order."""
    for name in names:
        for index, value in enumerate(outputs[name]):
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                raise CalibrationError(
                    f"output {name!r} of {what} is NaN or Inf on batch {index} of the data, so its error cannot be "
                    "measured; fix the model or the data (or compare without that output)"
                )


# --- statistics -----------------------------------------------------------------------------


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical, -inf when ref is all zero but test is not)."""
    r = ref.astype(np.float64).ravel()
    noise = float(np.sum((r - test.astype(np.float64).ravel()) ** 2))
    signal = float(np.sum(r * r))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(ref: np.ndarray, test: np.ndarray) -> float:
    a, b = ref.astype(np.float64).ravel(), test.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass(frozen=True)
class OutputStats:
    name: str
    max_abs: float
    max_rel: float
    cosine: float
    sqnr_db: float

    @classmethod
    def of(cls, name: str, ref: np.ndarray, test: np.ndarray) -> OutputStats:
        if ref.shape != test.shape:
            raise UsageError(
                f"output {name!r}: shapes differ ({ref.shape} vs {test.shape}); the models are not comparable"
            )
        r, t = ref.astype(np.float64), test.astype(np.float64)
        diff = np.abs(r - t)
        max_abs = float(diff.max(initial=0.0))
        # relative to the output's scale, so near-zero elements do not blow it up
        scale = float(np.abs(r).max(initial=0.0))
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
        return cls(name, max_abs, max_rel, cosine(r, t), sqnr_db(r, t))


@dataclass(frozen=True)
class TensorStats:
    """One quantized tensor: its SQNR in the second model against the FP32 model."""

    name: str
    consumer_ops: tuple[str, ...]
    sqnr_db: float
    cosine: float


@dataclass(frozen=True)
class AccuracyReport:
    """Per-output errors and per-tensor SQNR (worst first); `metric` holds a task metric when given."""

    outputs: tuple[OutputStats, ...]
    tensors: tuple[TensorStats, ...] = ()
    metric: Mapping[str, float] = field(default_factory=dict)

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    @property
    def min_sqnr_db(self) -> float:
        return min((o.sqnr_db for o in self.outputs), default=math.inf)

    def to_dict(self) -> dict:
        return {
            "outputs": [_finite(o.__dict__) for o in self.outputs],
            "tensors": [
                _finite({**t.__dict__, "consumer_ops": list(t.consumer_ops)}) for t in self.tensors
            ],
            "metric": dict(self.metric),
        }

    def summary_lines(self, *, max_tensors: int = 10) -> list[str]:
        lines = ["output                         max_abs     max_rel    cosine    SQNR dB"]
        for o in self.outputs:
            lines.append(
                f"{o.name:<30} {o.max_abs:<11.4g} {o.max_rel:<10.4g} {o.cosine:<9.6f} {o.sqnr_db:.2f}"
            )
        if self.tensors:
            lines.append(
                f"quantized tensors, worst {min(max_tensors, len(self.tensors))} of {len(self.tensors)}:"
            )
            for t in self.tensors[:max_tensors]:
                lines.append(f"  {t.name:<40} {t.sqnr_db:7.2f} dB  -> {','.join(t.consumer_ops)}")
        for key, value in self.metric.items():
            lines.append(f"metric {key}: {value:.6g}")
        return lines

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(o.name)}</td><td>{o.max_abs:.4g}</td><td>{o.max_rel:.4g}</td>"
            f"<td>{o.cosine:.6f}</td><td>{o.sqnr_db:.2f}</td></tr>"
            for o in self.outputs
        )
        trows = "".join(
            f"<tr><td>{html.escape(t.name)}</td><td>{html.escape(','.join(t.consumer_ops))}</td>"
            f"<td>{t.sqnr_db:.2f}</td><td>{t.cosine:.6f}</td></tr>"
            for t in self.tensors
        )
        out = (
            "<table><tr><th>output</th><th>max abs</th><th>max rel</th><th>cosine</th><th>SQNR dB</th></tr>"
            f"{rows}</table>"
        )
        if trows:
            out += (
                "<table><tr><th>quantized tensor (worst first)</th><th>feeds</th><th>SQNR dB</th><th>cosine</th></tr>"
                f"{trows}</table>"
            )
        return out


def _finite(d: dict) -> dict:
    """JSON has no inf/nan: write them as strings."""
    return {
        k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()
    }


def quantized_tensors(model: onnx.ModelProto) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Activation tensors the Q/DQ model quantizes: FP32 name -> (DQ output name, consumer op types)."""
    producers = {out: n for n in model.graph.node for out in n.output}
    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n.op_type)
    found = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producers.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]
        if src in inits or (src in producers and producers[src].op_type == "Constant"):
            continue  # a weight: its error is static, not a layer-wise signal
        found[src] = (node.output[0], tuple(consumers.get(node.output[0], ())))
    return found


def compare(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    data: DataLike,
    *,
    per_tensor: bool = True,
    metric: Callable[[Mapping[str, np.ndarray]], float] | None = None,
) -> AccuracyReport:
    """Run both models on `data`; per-output errors and (if `per_tensor`) per-quantized-tensor SQNR.

    `metric`, when given, gets a model's concatenated outputs by name and returns a score; it
    is reported for both models (`reference`, `candidate`) and their difference.
    """
    batches = as_batches(data, reference)
    qtensors = quantized_tensors(candidate) if per_tensor else {}
    ref_names = {o for n in reference.graph.node for o in n.output} | {
        i.name for i in reference.graph.input
    }
    qtensors = {k: v for k, v in qtensors.items() if k in ref_names}
    ref_out = run(reference, batches, extra_outputs=list(qtensors))
    check_finite(
        ref_out,
        [o.name for o in reference.graph.output if o.name in ref_out],
        "the reference model",
    )
    cand_out = run(candidate, batches, extra_outputs=[dq for dq, _ in qtensors.values()])
    outputs = []
    for out in reference.graph.output:
        if out.name not in cand_out:
            raise UsageError(
                f"output {out.name!r} of the reference model is not an output of the candidate model"
            )
        outputs.append(OutputStats.of(out.name, _cat(ref_out[out.name]), _cat(cand_out[out.name])))
    tensors = []
    for name, (dq, ops) in qtensors.items():
        ref, test = _cat(ref_out[name]), _cat(cand_out[dq]).astype(np.float32)
        tensors.append(TensorStats(name, ops, sqnr_db(ref, test), cosine(ref, test)))
    tensors.sort(key=lambda t: t.sqnr_db)
    scores: dict[str, float] = {}
    if metric is not None:
        names = [o.name for o in reference.graph.output]
        scores["reference"] = float(metric({n: _cat(ref_out[n]) for n in names}))
        scores["candidate"] = float(metric({n: _cat(cand_out[n]) for n in names}))
        scores["drop"] = scores["reference"] - scores["candidate"]
    return AccuracyReport(tuple(outputs), tuple(tensors), scores)


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    """Batches joined along axis 0 when their trailing dims agree, else flattened and joined."""
    if len(arrays) == 1:
        return arrays[0]
    if all(a.ndim >= 1 and a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    return np.concatenate([a.reshape(-1) for a in arrays])


# --- FLOPs of weighted ops ------------------------------------------------------------------

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def weighted_macs(model: onnx.ModelProto, feed: Batch) -> dict[str, int]:
    """Multiply-accumulates per Conv/ConvTranspose/Gemm/MatMul node for one run of `feed`.

    Shapes come from ONNX Runtime (every node input/output exposed once), so dynamic dims are
    what the data makes them. Keyed by node name (unnamed nodes get `<op>:<first output>`).
    """
    nodes = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS]
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    wanted = sorted({t for n in nodes for t in (*n.input[:2], n.output[0]) if t and t not in inits})
    values = run(model, [feed], extra_outputs=wanted)
    shapes = {k: tuple(v[0].shape) for k, v in values.items()}
    shapes.update(inits)
    macs = {}
    for n in nodes:
        key = n.name or f"{n.op_type}:{n.output[0]}"
        a, w, y = shapes.get(n.input[0]), shapes.get(n.input[1]), shapes.get(n.output[0])
        if a is None or w is None or y is None:
            continue
        if n.op_type == "Conv":
            macs[key] = int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":
            macs[key] = int(np.prod(a)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            macs[key] = int(np.prod(y)) * int(a[0] if trans_a else a[1])
        else:  # MatMul
            macs[key] = int(np.prod(y)) * int(a[-1])
    return macs


def node_key(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}:{node.output[0]}"


def int8_mac_share(quantized: onnx.ModelProto, macs: Mapping[str, int]) -> float:
    """Share of the weighted ops' MACs whose data input and weight are both fed by DequantizeLinear."""
    producers = {out: n.op_type for n in quantized.graph.node for out in n.output}
    total = sum(macs.values())
    if total == 0:
        return 0.0
    int8 = 0
    for n in quantized.graph.node:
        if n.op_type in WEIGHTED_OPS and node_key(n) in macs:
            if all(producers.get(t) == "DequantizeLinear" for t in n.input[:2]):
                int8 += macs[node_key(n)]
    return int8 / total
