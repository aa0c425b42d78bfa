"""Activation collection with ONNX Runtime, streamed into per-tensor histograms.

Every floating-point tensor TensorRT would quantize (the graph inputs and the outputs of
every node that is not a constant) is exposed as an extra graph output. Each batch's
values go straight into that tensor's `Histogram` and are dropped, so memory is bounded by
one batch's activations whatever the data set size.

Range modes:
- two-pass (exact): pass 1 finds each tensor's |max|, pass 2 histograms over [0, |max|];
  needs a source that can be read twice.
- single-pass: one read, histograms grow their range as larger values arrive.

The state (histograms + counts) saves to .npz or .json and merges, so runs over parts of a
data set (or a later run with more data) combine into one calibration.
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .._io import atomic_write, load_arrays, load_json_limited, load_model
from ..errors import CalibrationError, UsageError
from .dataset import ArraySource, ImageSource, InputSpec, format_shape, resolve_calibration_shapes
from .histogram import usable_cpus

log = logging.getLogger(__name__)

FLOAT_ONNX_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16})
_FLOAT_ORT_TYPES = frozenset({"tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"})
MODES = ("auto", "two-pass", "single-pass")
# all: the graph inputs and every node output (what a TensorRT <= 10 cache lists);
# qdq: only the activations insert-qdq quantizes (all a TensorRT 11 Q/DQ model needs)
SCOPES = ("all", "qdq")
# ops whose output holds exactly the values of their data input, rearranged: same histogram
_SAME_VALUES_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                              "DepthToSpace", "SpaceToDepth"})
STATE_FORMAT = "onnx2trt-calib-state/1"
# histograms of thousands of tensors fit easily; a bigger .json is not a state this library wrote
MAX_STATE_JSON_BYTES = 256 * 2**20

# A tensor is binned whole by one worker unless it is bigger than this and than its fair share of
# the batch (batch elements / workers): those are split over every thread by the histogram engine.
_BIG_TENSOR = 1 << 20
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def _tensor_pool() -> tuple[ThreadPoolExecutor | None, int]:
    """(workers, their number): ONNX2TRT_CALIB_THREADS or the usable CPUs (no pool when 1)."""
    global _POOL, _POOL_SIZE
    env = os.environ.get("ONNX2TRT_CALIB_THREADS", "")
    threads = int(env) if env.isdigit() and int(env) > 0 else usable_cpus()
    if threads <= 1:
        return None, 1
    if _POOL is None or _POOL_SIZE != threads:
        _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="calib-tensors"), threads
    return _POOL, threads


# progress(phase, batches_done, batches_total_or_None); phase is "range", "histogram" or "collect"
ProgressCallback = Callable[[str, int, "int | None"], None]


# ----------------------------------------------------------------------------- model side


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """Graph inputs that are fed at run time (initializers listed as inputs are not)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)) if tensor_type.elem_type else np.dtype(np.float32)
        specs.append(InputSpec(value.name, dims, dtype))
    return specs


def quantizable_tensors(
    model: onnx.ModelProto,
    *,
    include_inputs: bool = True,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Names of candidate activation tensors, in graph order.

    Node outputs computed only from constants are left out (TensorRT folds them: they are
    weights, not activations). Types are settled later by ONNX Runtime, which reports the
    element type of every output; non-float ones are dropped there.
    """
    graph = model.graph
    constant = {init.name for init in graph.initializer}
    known_types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.value_info, *graph.output)}
    names: list[str] = []
    if include_inputs:
        for spec in model_inputs(model):
            if spec.is_float:
                names.append(spec.name)
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constant for name in inputs)):
            constant.update(o for o in node.output if o)
            continue
        for out in node.output:
            if not out:
                continue
            elem = known_types.get(out, 0)
            if elem and elem not in FLOAT_ONNX_TYPES:
                continue
            names.append(out)
    if include is not None:
        wanted = set(include)
        missing = sorted(wanted - set(names))
        if missing:
            raise UsageError(f"tensor(s) {', '.join(missing[:5])} are not float activations of the model")
        names = [n for n in names if n in wanted]
    drop = set(exclude)
    return [n for n in names if n not in drop]


def qdq_tensors(model: onnx.ModelProto) -> set[str]:
    """The activations insert-qdq would quantize (inputs of Conv/Gemm/MatMul, residual Adds)."""
    import onnx_graphsurgeon as gs

    from ..passes.insert_qdq import activations_to_quantize

    return set(activations_to_quantize(gs.import_onnx(model)))


def value_aliases(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, str]:
    """{tensor: the collected tensor whose values it rearranges} (Reshape/Transpose/... chains).

    Such a tensor's histogram equals its source's, so it is copied instead of fetched from ONNX
    Runtime and binned again.
    """
    wanted = set(names)
    source: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in _SAME_VALUES_OPS and node.input and node.input[0] and len(node.output) == 1:
            if node.output[0] in wanted:
                source[node.output[0]] = node.input[0]
    aliases = {}
    for name in source:
        root, hops = name, 0
        while root in source and hops <= len(source):
            root, hops = source[root], hops + 1
        if root in wanted and root not in source:
            aliases[name] = root
    return aliases


def _session(model: onnx.ModelProto, outputs: Sequence[str], optimization: str) -> Any:
    """An ORT session whose graph outputs include `outputs` (CUDA provider when present)."""
    from .._optional import onnxruntime

    ort = onnxruntime()
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    already = {o.name for o in exposed.graph.output}
    typed = {vi.name: vi for vi in exposed.graph.value_info}
    for name in outputs:
        if name in already:
            continue
        exposed.graph.output.append(typed[name] if name in typed else onnx.ValueInfoProto(name=name))
        already.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Workers spin while a run is on (without it ORT ran 1.3x slower on PP-OCRv4 rec) but stop
    # when it returns: the histogram kernels run right after, on the same cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise UsageError(f"ORT optimization {optimization!r} is not one of {', '.join(levels)}")
    options.graph_optimization_level = levels[optimization]
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(exposed.SerializeToString(), sess_options=options, providers=providers)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CalibrationError(f"ONNX Runtime cannot load the model for calibration: {first}") from None


# ----------------------------------------------------------------------------- state


@dataclass
class CalibrationState:
    """Per-tensor histograms plus how they were made; merge() combines runs over parts of the data."""

    histograms: dict[str, Any] = field(default_factory=dict)
    mode: str = "single-pass"
    num_batches: int = 0
    num_samples: int = 0
    sources: list[str] = field(default_factory=list)

    def merge(self, other: CalibrationState) -> CalibrationState:
        names = list(self.histograms) + [n for n in other.histograms if n not in self.histograms]
        merged = {}
        for name in names:
            mine, theirs = self.histograms.get(name), other.histograms.get(name)
            merged[name] = mine.merge(theirs) if mine is not None and theirs is not None else (mine or theirs)
        mode = self.mode if self.mode == other.mode else "merged"
        return CalibrationState(
            merged, mode, self.num_batches + other.num_batches, self.num_samples + other.num_samples,
            self.sources + other.sources,
        )

    def compute_amax(self, method: str = "entropy", **options: Any) -> dict[str, float]:
        """amax of every tensor; the searches (numba, GIL released) run side by side on the tensor pool."""

        def one(item: tuple[str, Any]) -> float:
            name, hist = item
            try:
                return float(hist.compute_amax(method, **dict(options)))
            except CalibrationError as exc:
                raise CalibrationError(f"tensor {name!r}: {exc}") from None

        items = list(self.histograms.items())
        pool, _ = _tensor_pool()
        values = list(pool.map(one, items)) if pool is not None and len(items) > 1 else [one(i) for i in items]
        return {name: value for (name, _), value in zip(items, values, strict=True)}

    def ranges(self) -> dict[str, float]:
        """Each histogram's current top edge: start other collections here so their states merge exactly."""
        return {name: float(h.range_max) for name, h in self.histograms.items()}

    # -- persistence: state_dict arrays go into .npz as arrays, everything else into one JSON header
    def _header(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "mode": self.mode, "num_batches": self.num_batches,
                "num_samples": self.num_samples, "sources": self.sources, "tensors": list(self.histograms)}

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        states = {name: h.state_dict() for name, h in self.histograms.items()}
        if path.suffix.lower() == ".json":
            payload = self._header()
            payload["tensors"] = {name: _jsonable(state) for name, state in states.items()}
            with atomic_write(path, "w") as handle:
                json.dump(payload, handle)
            return
        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, dict[str, Any]] = {}
        for index, (name, state) in enumerate(states.items()):
            scalars[name] = {}
            for key, value in state.items():
                if key == "counts":
                    value = np.asarray(value, dtype=np.int64)
                if isinstance(value, np.ndarray):
                    arrays[f"t{index}/{key}"] = value
                else:
                    scalars[name][key] = _jsonable(value)
        header = self._header()
        header["scalars"] = scalars
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationState:
        from . import Histogram

        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"calibration state {path}: no such file")
        what = "calibration state"
        try:
            if path.suffix.lower() == ".json":
                payload = load_json_limited(path, limit=MAX_STATE_JSON_BYTES, what=what, error=CalibrationError)
                tensors = {name: _from_jsonable(state) for name, state in payload["tensors"].items()}
            else:
                data = load_arrays(path, what=what, error=CalibrationError)
                if not isinstance(data, dict):
                    raise ValueError("a single .npy array, not a saved state (.npz)")
                payload = json.loads(bytes(data["__header__"]).decode())
                tensors = {}
                for index, name in enumerate(payload["tensors"]):
                    state = dict(payload["scalars"][name])
                    prefix = f"t{index}/"
                    for key, value in data.items():
                        if key.startswith(prefix):
                            state[key[len(prefix):]] = value
                    tensors[name] = state
            if payload.get("format") != STATE_FORMAT:
                raise ValueError(f"format {payload.get('format')!r} is not {STATE_FORMAT}")
            histograms = {name: Histogram.from_state(state) for name, state in tensors.items()}
            return cls(histograms, payload["mode"], payload["num_batches"], payload["num_samples"],
                       list(payload.get("sources", [])))
        except (KeyError, ValueError, TypeError, AttributeError, OSError, RecursionError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CalibrationError(f"calibration state {path}: not a saved onnx2trt state ({reason})") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        if "__float__" in value:
            return float(value["__float__"])
        return {k: _from_jsonable(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- collection


@dataclass(frozen=True)
class CollectOptions:
    """How collection runs; None fields mean the default."""

    mode: str = "auto"
    num_bins: int = 2048
    ignore_nonfinite: bool = False
    include_inputs: bool = True
    tensors: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    ort_optimization: str = "all"
    scope: str = "all"
    # run ONNX Runtime on the next batch while this one is histogrammed: two batches in memory, and
    # no faster on the machines measured (both sides already use every core; benchmarks/results/calibrate.md)
    overlap: bool = False


class _Feeder:
    """Batches of a data source as checked {input: array} feeds for one model."""

    def __init__(self, model: onnx.ModelProto, source: Any, shapes: Mapping[str, Sequence[int]],
                 batch_size: int | None) -> None:
        self.model, self.source = model, source
        self.inputs = model_inputs(model)
        if not self.inputs:
            raise CalibrationError("the model has no inputs to feed; nothing to run it on")
        self.shapes = self._shapes(shapes, batch_size)

    def _shapes(self, shapes: Mapping[str, Sequence[int]], batch_size: int | None) -> dict[str, tuple[int, ...]] | None:
        if isinstance(self.source, ImageSource):
            return resolve_calibration_shapes(self.inputs, shapes, batch_size)
        if isinstance(self.source, ArraySource):
            given = dict(shapes)
            arrays = self.source._named({spec.name: () for spec in self.inputs})
            for spec in self.inputs:
                if spec.name not in given:
                    arr = arrays[spec.name]
                    sample, wanted = tuple(arr.shape[1:]), tuple(spec.dims[1:])
                    if spec.dims and (len(sample) != len(wanted) or any(w not in (None, g) for w, g in zip(wanted, sample))):
                        raise CalibrationError(
                            f"{self.source.describe()}: samples for input {spec.name!r} are {format_shape(sample)} but "
                            f"the model's input is {format_shape(spec.dims)} (batch first)"
                        )
                    given[spec.name] = (batch_size or spec.dims[0] or 1, *arr.shape[1:]) if spec.dims else ()
            return resolve_calibration_shapes(self.inputs, given, batch_size)
        return None  # caller's batches: checked one by one against the model's static dims

    def _feeds(self, batch: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        feeds = {}
        for spec in self.inputs:
            if spec.name not in batch:
                raise CalibrationError(f"batch {index} has no array for input {spec.name!r} (it has {', '.join(batch)})")
            arr = np.asarray(batch[spec.name])
            want = self.shapes[spec.name] if self.shapes else spec.dims
            if len(arr.shape) != len(want) or any(w is not None and w != g for w, g in zip(want, arr.shape, strict=False)):
                raise CalibrationError(
                    f"batch {index}: input {spec.name!r} is {format_shape(arr.shape)} but the model wants {format_shape(want)}"
                )
            if arr.dtype != spec.dtype:
                if np.issubdtype(arr.dtype, np.floating) != spec.is_float:
                    raise CalibrationError(f"batch {index}: input {spec.name!r} is {arr.dtype} but the model wants {spec.dtype}")
                arr = arr.astype(spec.dtype)
            feeds[spec.name] = arr
        return feeds

    def _batches(self) -> Iterable[tuple[int, dict[str, np.ndarray]]]:
        for index, batch in enumerate(self.source.batches(self.shapes)):
            yield index, self._feeds(batch, index)


class _Collector(_Feeder):
    """Runs the model on the feeds with every collected tensor exposed, bins them per batch."""

    def __init__(self, model: onnx.ModelProto, source: Any, shapes: Mapping[str, Sequence[int]], batch_size: int | None,
                 options: CollectOptions, progress: ProgressCallback | None) -> None:
        super().__init__(model, source, shapes, batch_size)
        self.options, self.progress = options, progress
        candidates = quantizable_tensors(model, include_inputs=options.include_inputs,
                                         include=options.tensors, exclude=options.exclude)
        if options.scope not in SCOPES:
            raise UsageError(f"tensor scope {options.scope!r} is not one of {', '.join(SCOPES)}")
        if options.scope == "qdq":
            wanted = qdq_tensors(model)
            candidates = [n for n in candidates if n in wanted]
        self.aliases = value_aliases(model, candidates)
        input_names = {spec.name for spec in self.inputs}
        outputs = [n for n in candidates if n not in input_names and n not in self.aliases]
        from .._optional import onnxruntime

        self._ort = onnxruntime()
        self.session = _session(model, outputs, options.ort_optimization)
        float_outputs = {o.name for o in self.session.get_outputs() if o.type in _FLOAT_ORT_TYPES}
        self.fetch = [n for n in outputs if n in float_outputs]
        self.fed = [n for n in candidates if n in input_names]
        binned = set(self.fetch) | set(self.fed)
        self.aliases = {a: root for a, root in self.aliases.items() if root in binned}
        self.binned = [n for n in candidates if n in binned]
        self.names = [n for n in candidates if n in binned or n in self.aliases]
        if not self.names:
            raise CalibrationError("the model has no floating-point activations to calibrate (all tensors are integer or constant)")
        self.sample_count = 0

    def _activations(self, feeds: Mapping[str, np.ndarray]) -> tuple[list[tuple[str, np.ndarray]], Any]:
        """(name, values) of every collected tensor for one batch, plus the ORT outputs that own them.

        OrtValues, not run(): outputs stay in ORT's arena (reused every batch) and .numpy() is a
        view, so one batch's activations are neither copied nor page-faulted in again. The caller
        keeps the returned owner alive until it has read every array.
        """
        try:
            ort_feeds = {name: self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr)) for name, arr in feeds.items()}
            values = self.session.run_with_ort_values(self.fetch, ort_feeds)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CalibrationError(f"ONNX Runtime failed on a calibration batch: {first}") from None
        pairs = [(name, feeds[name]) for name in self.fed]
        for position, name in enumerate(self.fetch):
            arr = values[position].numpy()
            pairs.append((name, arr if arr.dtype in (np.float32, np.float16) else arr.astype(np.float32)))
        return pairs, values

    def _runs(self) -> Iterable[tuple[int, dict[str, np.ndarray], list[tuple[str, np.ndarray]], Any]]:
        """(index, feeds, activations, owner) per batch; with overlap, ONNX Runtime already runs the
        next batch (in a helper thread; it releases the GIL) while the caller bins this one."""
        batches = iter(self._batches())

        def produce() -> tuple[int, dict[str, np.ndarray], list[tuple[str, np.ndarray]], Any] | None:
            item = next(batches, None)
            if item is None:
                return None
            index, feeds = item
            return (index, feeds, *self._activations(feeds))

        if not self.options.overlap:
            while True:
                run = produce()  # the previous batch is released first: ORT reuses its arena
                if run is None:
                    return
                yield run
                del run
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="calib-ort") as ahead:
            pending = ahead.submit(produce)
            try:
                while (run := pending.result()) is not None:
                    pending = ahead.submit(produce)
                    yield run
                    del run
            finally:
                pending.cancel()

    def _each_tensor(self, pairs: list[tuple[str, np.ndarray]], owner: Any,
                     work: Callable[[str, np.ndarray, int | None], None]) -> None:
        """Apply `work(name, values, threads)` to every tensor of one batch; errors re-raised in graph order.

        Tensors run whole, one per worker, biggest first (no per-piece count arrays, no hand-offs);
        only a tensor bigger than its fair share of the batch is split over every thread.
        """
        pool, workers = _tensor_pool()
        errors: list[tuple[int, BaseException]] = []

        def run(index: int, threads: int | None) -> None:
            try:
                work(*pairs[index], threads)
            except CalibrationError as exc:
                errors.append((index, exc))

        if pool is None:
            for index in range(len(pairs)):
                run(index, None)
        else:
            share = max(_BIG_TENSOR, sum(arr.size for _, arr in pairs) // workers)
            order = sorted(range(len(pairs)), key=lambda i: -pairs[i][1].size)
            pending = [pool.submit(run, i, 1) for i in order if pairs[i][1].size < share]
            for index in order:
                if pairs[index][1].size >= share:
                    run(index, None)
            for future in pending:
                future.result()
        del owner, pairs  # every array is read: the outputs go back to ORT's arena
        if errors:
            raise min(errors, key=lambda item: item[0])[1]

    def _nonfinite(self, name: str) -> None:
        raise CalibrationError(
            f"tensor {name!r} has NaN or Inf activations on the calibration data; check the inputs/preprocessing "
            "or pass --ignore-nonfinite to skip those values"
        )

    def _total(self) -> int | None:
        try:
            return self.source.num_batches(self.shapes) if self.shapes is not None else self.source.num_batches({})
        except Exception:
            return None

    def range_pass(self) -> dict[str, float]:
        """Pass 1: max |x| over finite values (NaN/Inf are caught by pass 2's histogram counts)."""
        from . import abs_max

        amax = dict.fromkeys(self.binned, 0.0)
        total = self._total()
        found: dict[str, float] = {}

        def work(name: str, arr: np.ndarray, threads: int | None) -> None:
            found[name] = float(abs_max(arr, threads=threads))

        for index, _, pairs, owner in self._runs():
            found.clear()
            self._each_tensor(pairs, owner, work)
            del pairs, owner
            for name, value in found.items():
                amax[name] = max(amax[name], value)
            self._tick("range", index + 1, total)
        return amax

    def histogram_pass(self, ranges: Mapping[str, float] | None, *, mode: str) -> CalibrationState:
        from . import Histogram

        phase = "histogram" if mode == "two-pass" else "collect"
        ranges = ranges or {}
        histograms = {name: Histogram(self.options.num_bins, range_max=ranges.get(name) or None) for name in self.binned}
        total = self._total()
        batches = samples = 0

        def work(name: str, arr: np.ndarray, threads: int | None) -> None:
            hist = histograms[name]
            before = hist.nonfinite
            hist.update(arr, threads=threads)
            if hist.nonfinite != before and not self.options.ignore_nonfinite:
                self._nonfinite(name)

        for index, feeds, pairs, owner in self._runs():
            self._each_tensor(pairs, owner, work)
            del pairs, owner
            batches += 1
            samples += int(next(iter(feeds.values())).shape[0]) if feeds and next(iter(feeds.values())).ndim else 1
            self._tick(phase, index + 1, total)
        if not batches:
            raise CalibrationError(f"{self.source.describe()}: gave no batches; nothing to calibrate")
        ordered = {name: histograms[name] if name in histograms else histograms[self.aliases[name]].copy()
                   for name in self.names}
        return CalibrationState(ordered, mode, batches, samples, [self.source.describe()])

    def _tick(self, phase: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)


def model_feeds(
    model: str | os.PathLike | onnx.ModelProto,
    data: Any,
    *,
    preprocess: Any = None,
    shapes: Any = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """Checked {input: array} feeds of `model` from any data `calibrate()` takes.

    Image lists/folders/globs (with a `preprocess`), .npy/.npz, arrays or batches: so models can
    be compared and protected on the same kind of data they were calibrated on.
    """
    from .dataset import open_source, parse_shapes
    from .preprocess import load_preprocess

    source = open_source(data, preprocess=load_preprocess(preprocess))
    feeder = _Feeder(load_model(model, check=False), source, parse_shapes(shapes), batch_size)
    feeds: list[dict[str, np.ndarray]] = []
    for _, feed in feeder._batches():
        feeds.append(feed)
        if max_batches is not None and len(feeds) >= max_batches:
            break
    if not feeds:
        raise CalibrationError(f"{source.describe()}: gave no batches")
    return feeds


def resolve_mode(mode: str, *, rereadable: bool, method: str = "entropy") -> str:
    """'auto' -> two-pass when the source can be read twice (and the method needs a histogram)."""
    if mode not in MODES:
        raise UsageError(f"range mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto":
        return "two-pass" if rereadable and method != "max" else "single-pass"
    if mode == "two-pass" and not rereadable:
        raise UsageError("two-pass calibration reads the data twice, but this source is one-pass (a generator); use single-pass")
    return mode


def collect(
    model: str | os.PathLike | onnx.ModelProto,
    source: Any,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch_size: int | None = None,
    method: str = "entropy",
    options: CollectOptions | None = None,
    progress: ProgressCallback | None = None,
    initial_ranges: Mapping[str, float] | None = None,
) -> CalibrationState:
    """Run the model over `source` (see dataset.open_source) and return per-tensor histograms.

    `initial_ranges` (e.g. `saved_state.ranges()`) starts single-pass histograms at those
    ranges, so the new state merges exactly with the saved one (ranges grow by doubling).
    """
    from .dataset import open_source

    options = options or CollectOptions()
    model_proto = load_model(model, check=False)
    source = open_source(source)
    collector = _Collector(model_proto, source, shapes or {}, batch_size, options, progress)
    mode = resolve_mode(options.mode, rereadable=source.rereadable, method=method)
    log.info("collecting %d tensors, %s, from %s", len(collector.names), mode, source.describe())
    if initial_ranges:
        return collector.histogram_pass(initial_ranges, mode="single-pass")
    if mode == "two-pass":
        return collector.histogram_pass(collector.range_pass(), mode="two-pass")
    return collector.histogram_pass(None, mode="single-pass")
