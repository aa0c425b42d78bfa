"""Activation collection with ONNX Runtime, streamed into per-tensor histograms.

Every floating-point tensor TensorRT would quantize (the graph inputs and the outputs of
every node that is not a constant) is exposed as an extra graph output. Each batch's
values go straight into that tensor's `Histogram` and are dropped, so memory is bounded by
one batch's activations whatever the data set size.

Range modes:
- two-pass (exact): the histogram of each tensor over [0, R] with R the smallest power of two
  >= |max| over all the data. The state is a function of the multiset of samples alone: batch
  size, order and any split into shards merged later give the same bytes (histogram.pow2_ceil
  says why). The name is historical: it reads the data once. A histogram starts at the power of
  two above its first batch's max and doubles by pair-merging bins when larger values arrive;
  doubling a power-of-two range is exact, so the result is the same bytes a first pass for the
  max followed by a second pass into [0, R] gives (`range_pass` is that first pass; the
  benchmark's floor uses it), at the cost of one ONNX Runtime run per batch instead of two.
- single-pass: one read, histograms grow their range as larger values arrive.

Which tensors: calib.tensors; the result: calib.state.CalibrationState (saves and merges).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .._io import load_model
from ..errors import CalibrationError, ModelLoadError, UsageError
from ._threads import ort_threads, overlap_threads, tensor_pool
from .dataset import (
    ArraySource,
    ImageSource,
    InputSpec,
    format_shape,
    resolve_calibration_shapes,
)
from .output_rows import OutputRows
from .state import CalibrationState
from .tensors import model_inputs, qdq_tensors, quantizable_tensors, value_aliases

log = logging.getLogger(__name__)

_FLOAT_ORT_TYPES = frozenset(
    {"tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"}
)
MODES = ("auto", "two-pass", "single-pass")
# all: the graph inputs and every node output (what a TensorRT <= 10 cache lists);
# qdq: only the activations insert-qdq quantizes (all a TensorRT 11 Q/DQ model needs)
SCOPES = ("all", "qdq")

# A tensor is binned whole by one worker unless it is bigger than this and than its fair share of
# the batch (batch elements / workers): those are split over every thread by the histogram engine.
_BIG_TENSOR = 1 << 20

# Exact mode runs a batch in parts of about this many bytes of exposed activations (rows along
# axis 0, where the model's batch is dynamic). PP-OCRv4 rec exposes 200 MB a row: a 32-row batch
# was 6.4 GB of fresh arena memory, and its page faults made the first run twice as slow as a
# warm one (benchmarks/results/quant.md, "flow speed"). The parts give the same values, so the
# same histograms: exact mode depends on the multiset of values alone.
RUN_BYTES = 1 << 30
FIRST_ROWS = 4  # rows of the first run, which measures a row's bytes

# progress(phase, batches_done, batches_total_or_None); phase is "range", "histogram" or "collect"
ProgressCallback = Callable[[str, int, "int | None"], None]


def _session(
    model: onnx.ModelProto, outputs: Sequence[str], optimization: str, threads: int | None = None
) -> Any:
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
        exposed.graph.output.append(
            typed[name] if name in typed else onnx.ValueInfoProto(name=name)
        )
        already.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Workers spin while a run is on (without it ORT ran 1.3x slower on PP-OCRv4 rec) but stop
    # when it returns: the histogram kernels run right after, on the same cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # An explicit count (the physical cores ORT would pick, but only those this process may use):
    # left at 0, ORT pins one thread per core, escaping taskset, and a pinned worker that finds its
    # core just used by a histogram thread made runs 1.5x slower (median 52-62 ms -> 35-39 ms a batch,
    # PP-OCRv4 rec on 16 cores; benchmarks/results/calibrate.md).
    options.intra_op_num_threads = threads or ort_threads()
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise UsageError(f"ORT optimization {optimization!r} is not one of {', '.join(levels)}")
    options.graph_optimization_level = levels[optimization]
    providers = [
        p
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if p in ort.get_available_providers()
    ]
    from .._io import ort_source

    try:
        with ort_source(exposed) as source:
            return ort.InferenceSession(source, sess_options=options, providers=providers)
    except ModelLoadError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CalibrationError(
            f"ONNX Runtime cannot load the model for calibration: {first}"
        ) from None


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
    # count exact zeros per tensor (method ncnn-kl leaves them out, as ncnn2table does)
    count_zeros: bool = False
    # keep a copy of the histograms once this fraction of the batches is binned (the convergence
    # report compares the thresholds of that copy with the final ones); None: no copy
    snapshot: float | None = None
    # keep the graph outputs of the first rows (calib.output_rows): a Q/DQ check on the same rows
    # then needs no FP32 run of its own
    keep_outputs: bool = False


@dataclass
class _Run:
    """One batch after ONNX Runtime: its feeds, (name, values) of every collected tensor, the ORT
    outputs that own those values (kept alive until they are read) and whether it is the last."""

    index: int
    feeds: dict[str, np.ndarray]
    pairs: list[tuple[str, np.ndarray]]
    owner: Any
    last: bool
    end: bool = True  # the last part of its batch (exact mode runs big batches in parts)

    def release(self) -> None:
        self.pairs, self.owner = [], None


def _fixed_first_dim(outputs: Iterable[onnx.ValueInfoProto]) -> bool:
    """Whether an output declares a fixed first dimension (or is a scalar): with a dynamic
    batch it is then not one row per input row, though a batch of 1 cannot tell."""
    for info in outputs:
        if not info.type.tensor_type.HasField("shape"):
            continue
        dims = info.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            return True
    return False


def _dims(shape: Sequence[int | None]) -> str:
    """(5, None, 3) -> `5x?x3`; () -> `a scalar`: shapes as calibration messages show them."""
    return "x".join("?" if d is None or d < 0 else str(d) for d in shape) or "a scalar"


def _mismatch(sample: Sequence[int], wanted: Sequence[int | None]) -> str:
    """What differs between a sample's shape and the model's per-sample dims, in words."""
    if len(sample) != len(wanted):
        return (
            f"{len(sample)} dimension(s) per sample where the model takes {len(wanted)} "
            "(add or drop an axis, or give --shape)"
        )
    for axis, (got, want) in enumerate(zip(sample, wanted, strict=True), start=1):
        if want is not None and want != got:
            return f"dimension {axis} is {got} where the model's is fixed at {want}"
    return "the shapes differ"


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """(item, is_last) pairs: each item is yielded once the next one has been read."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for following in it:
        yield current, False
        current = following
    yield current, True


class _Feeder:
    """Batches of a data source as checked {input: array} feeds for one model."""

    def __init__(
        self,
        model: onnx.ModelProto,
        source: Any,
        shapes: Mapping[str, Sequence[int]],
        batch_size: int | None,
    ) -> None:
        self.model, self.source = model, source
        self.inputs = model_inputs(model)
        if not self.inputs:
            raise CalibrationError("the model has no inputs to feed; nothing to run it on")
        # inputs declared without a shape (rank unknown) take any rank; model_inputs gives them dims ()
        self.unranked = {
            v.name for v in model.graph.input if not v.type.tensor_type.HasField("shape")
        }
        self.shapes = self._shapes(shapes, batch_size)
        # a dynamic batch dim: the samples that do not fill a batch run as a short last batch, so
        # every sample is calibrated whatever the batch size (exact mode's results depend on it)
        self.tail = isinstance(source, (ImageSource, ArraySource)) and all(
            (spec.dims and spec.dims[0] is None) or spec.name in self.unranked
            for spec in self.inputs
        )

    def _shapes(
        self, shapes: Mapping[str, Sequence[int]], batch_size: int | None
    ) -> dict[str, tuple[int, ...]] | None:
        if isinstance(self.source, ImageSource):
            return resolve_calibration_shapes(self.inputs, shapes, batch_size)
        if isinstance(self.source, ArraySource):
            given = dict(shapes)
            arrays = self.source._named({spec.name: () for spec in self.inputs})
            # an input of unknown rank is calibrated at the rank of its samples (batch first)
            specs = [
                InputSpec(s.name, (None, *arrays[s.name].shape[1:]), s.dtype)
                if s.name in self.unranked
                else s
                for s in self.inputs
            ]
            # inputs without a --shape take the batch of those with one: ArraySource slices every
            # array to the same number of samples (symbolic batch dims shared between inputs)
            shaped_batch = next((int(dims[0]) for dims in given.values() if len(dims)), None)
            for spec in specs:
                if spec.name not in given:
                    arr = arrays[spec.name]
                    sample, wanted = tuple(arr.shape[1:]), tuple(spec.dims[1:])
                    if spec.dims and (
                        len(sample) != len(wanted)
                        or any(w not in (None, g) for w, g in zip(wanted, sample, strict=True))
                    ):
                        raise CalibrationError(
                            f"{self.source.describe()}: samples for input {spec.name!r} do not "
                            f"fit: the array is {_dims(arr.shape)}, so {_dims(sample)} per sample "
                            f"(samples along its first axis), but the model's input is "
                            f"{_dims(spec.dims)}, so {_dims(wanted)} per sample (its first "
                            f"dimension is the batch): {_mismatch(sample, wanted)}"
                        )
                    given[spec.name] = (
                        (batch_size or spec.dims[0] or shaped_batch or 1, *arr.shape[1:])
                        if spec.dims
                        else ()
                    )
            return resolve_calibration_shapes(specs, given, batch_size)
        return None  # caller's batches: checked one by one against the model's static dims

    def _feeds(self, batch: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        feeds = {}
        for spec in self.inputs:
            if spec.name not in batch:
                raise CalibrationError(
                    f"batch {index} has no array for input {spec.name!r} (it has {', '.join(batch)})"
                )
            arr = np.asarray(batch[spec.name])
            want = self.shapes[spec.name] if self.shapes else spec.dims
            if self.tail and want:
                want = (None, *want[1:])
            checked = self.shapes or spec.name not in self.unranked
            if checked and (
                len(arr.shape) != len(want)
                or any(w is not None and w != g for w, g in zip(want, arr.shape, strict=False))
            ):
                raise CalibrationError(
                    f"batch {index}: input {spec.name!r} is {format_shape(arr.shape)} but the model wants {format_shape(want)}"
                )
            if arr.dtype != spec.dtype:
                if np.issubdtype(arr.dtype, np.floating) != spec.is_float:
                    raise CalibrationError(
                        f"batch {index}: input {spec.name!r} is {arr.dtype} but the model wants {spec.dtype}"
                    )
                arr = arr.astype(spec.dtype)
            feeds[spec.name] = arr
        return feeds

    def _batches(self) -> Iterable[tuple[int, dict[str, np.ndarray]]]:
        batches = (
            self.source.batches(self.shapes, tail=True)
            if self.tail
            else self.source.batches(self.shapes)
        )
        for index, batch in enumerate(batches):
            yield index, self._feeds(batch, index)


class _Collector(_Feeder):
    """Runs the model on the feeds with every collected tensor exposed, bins them per batch."""

    def __init__(
        self,
        model: onnx.ModelProto,
        source: Any,
        shapes: Mapping[str, Sequence[int]],
        batch_size: int | None,
        options: CollectOptions,
        progress: ProgressCallback | None,
    ) -> None:
        super().__init__(model, source, shapes, batch_size)
        self.options, self.progress = options, progress
        candidates = quantizable_tensors(
            model,
            include_inputs=options.include_inputs,
            include=options.tensors,
            exclude=options.exclude,
        )
        if options.scope not in SCOPES:
            raise UsageError(f"tensor scope {options.scope!r} is not one of {', '.join(SCOPES)}")
        if options.scope == "qdq":
            wanted = qdq_tensors(model)
            candidates = [n for n in candidates if n in wanted]
            if not candidates:
                raise CalibrationError(
                    "scope qdq: the model has no float Conv/ConvTranspose/Gemm/MatMul inputs (or "
                    "residual Adds) that insert-qdq would quantize; use scope all"
                )
        self.aliases = value_aliases(model, candidates)
        input_names = {spec.name for spec in self.inputs}
        outputs = [n for n in candidates if n not in input_names and n not in self.aliases]
        from .._optional import onnxruntime

        self._ort = onnxruntime()
        self.ort_threads: int | None
        self.bin_threads: int | None
        self.ort_threads, self.bin_threads = overlap_threads() if options.overlap else (None, None)
        self.session = _session(model, outputs, options.ort_optimization, self.ort_threads)
        float_outputs = {o.name for o in self.session.get_outputs() if o.type in _FLOAT_ORT_TYPES}
        self.fetch = [n for n in outputs if n in float_outputs]
        self.fed = [n for n in candidates if n in input_names]
        binned = set(self.fetch) | set(self.fed)
        self.aliases = {a: root for a, root in self.aliases.items() if root in binned}
        self.binned = [n for n in candidates if n in binned]
        self.names = [n for n in candidates if n in binned or n in self.aliases]
        self.run_rows: int | None = None  # rows per ORT run where batches run in parts
        # the graph's outputs, kept for the first rows where calibration fetches them all
        graph_outputs = [o.name for o in model.graph.output]
        dynamic = all(spec.dims and spec.dims[0] is None for spec in self.inputs)
        self.output_rows = (
            OutputRows(graph_outputs, whole=not dynamic)
            if options.keep_outputs
            and graph_outputs
            and set(graph_outputs) <= set(self.fetch)
            and not (dynamic and _fixed_first_dim(model.graph.output))
            else None
        )
        if not self.names:
            raise CalibrationError(
                "the model has no floating-point activations to calibrate (all tensors are integer or constant)"
            )

    def _activations(
        self, feeds: Mapping[str, np.ndarray]
    ) -> tuple[list[tuple[str, np.ndarray]], Any]:
        """(name, values) of every collected tensor for one batch, plus the ORT outputs that own them.

        OrtValues, not run(): outputs stay in ORT's arena (reused every batch) and .numpy() is a
        view, so one batch's activations are neither copied nor page-faulted in again. The caller
        keeps the returned owner alive until it has read every array.
        """
        try:
            ort_feeds = {
                name: self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
                for name, arr in feeds.items()
            }
            values = self.session.run_with_ort_values(self.fetch, ort_feeds)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CalibrationError(f"ONNX Runtime failed on a calibration batch: {first}") from None
        pairs = [(name, feeds[name]) for name in self.fed]
        for position, name in enumerate(self.fetch):
            arr = values[position].numpy()
            # float64 stays float64: a cast to float32 rounds bins and turns |x| > 3.4e38 into Inf
            pairs.append(
                (
                    name,
                    arr
                    if arr.dtype in (np.float32, np.float16, np.float64)
                    else arr.astype(np.float32),
                )
            )
        return pairs, values

    def _part_rows(self, feeds: Mapping[str, np.ndarray]) -> int | None:
        """Rows of a batch that may run in parts (every input's batch dim dynamic, every array
        with the same count of rows), else None."""
        if self.unranked or not all(spec.dims and spec.dims[0] is None for spec in self.inputs):
            return None
        counts = {np.shape(v)[0] if np.ndim(v) else None for v in feeds.values()}
        return counts.pop() if len(counts) == 1 and None not in counts else None

    def _parts(
        self, batches: Iterable[tuple[tuple[int, dict[str, np.ndarray]], bool]], split: bool
    ) -> Iterator[tuple[int, dict[str, np.ndarray], bool, bool]]:
        """(index, feeds, last, end) per ONNX Runtime run: whole batches, or with `split` parts of
        `self.run_rows` rows (FIRST_ROWS until a run has measured a row's bytes)."""
        for (index, feeds), last in batches:
            rows = self._part_rows(feeds) if split else None
            step = self.run_rows or FIRST_ROWS
            if rows is None or rows <= step:
                yield index, feeds, last, True
                continue
            start = 0
            while start < rows:
                stop = min(rows, start + (self.run_rows or FIRST_ROWS))
                part = {k: v[start:stop] for k, v in feeds.items()}
                yield index, part, last and stop == rows, stop == rows
                start = stop

    def _runs(self, stop: int | None = None, *, split: bool = False) -> Iterable[_Run]:
        """One `_Run` per batch (batches from `stop` on are not read), or with `split` per part
        of about RUN_BYTES of activations; with overlap, ONNX Runtime already runs the next one
        (in a helper thread; it releases the GIL) while the caller bins this one. The next
        batch's inputs are read before ONNX Runtime runs this one, so each run knows whether it
        is the last."""
        batches = _with_last(itertools.islice(self._batches(), stop))  # batch indices count from 0
        parts = self._parts(batches, split)

        def produce() -> _Run | None:
            item = next(parts, None)
            if item is None:
                return None
            index, feeds, last, end = item
            pairs, owner = self._activations(feeds)
            rows = self._part_rows(feeds) if split and self.run_rows is None else None
            if rows:  # the first run measures what a row exposes
                exposed = sum(arr.nbytes for name, arr in pairs if name not in self.fed)
                self.run_rows = max(1, RUN_BYTES * rows // max(1, exposed))
            return _Run(index, feeds, pairs, owner, last, end)

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

    def _each_tensor(
        self,
        pairs: list[tuple[str, np.ndarray]],
        work: Callable[[str, np.ndarray, int | None], None],
    ) -> None:
        """Apply `work(name, values, threads)` to every tensor of one batch; errors re-raised in graph order.

        Tensors run whole, one per worker, biggest first (no per-piece count arrays, no hand-offs);
        only a tensor bigger than its fair share of the batch is split over every thread.
        """
        pool, workers = tensor_pool(self.bin_threads)
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
                    run(index, self.bin_threads)
            for future in pending:
                future.result()
        if errors:
            raise min(errors, key=lambda item: item[0])[1]

    def _nonfinite(self, name: str) -> None:
        raise CalibrationError(
            f"tensor {name!r} has NaN or Inf activations on the calibration data; check the inputs/preprocessing "
            "or pass --ignore-nonfinite to skip those values"
        )

    def _total(self) -> int | None:
        try:
            if self.tail:
                return self.source.num_batches(self.shapes, tail=True)
            return (
                self.source.num_batches(self.shapes)
                if self.shapes is not None
                else self.source.num_batches({})
            )
        except Exception:
            return None

    def range_pass(self) -> tuple[dict[str, float], _Run | None]:
        """max |x| over finite values of every tensor: the first pass of the two-pass route.

        Not used by `collect` (exact mode grows power-of-two ranges in one read, the same bytes);
        kept as that route's reference in the tests and as the benchmark's floor (ONNX Runtime
        with the tensors exposed, every value read once). Also returns the last batch's run,
        still holding its activations, which `histogram_pass(held=...)` bins first.
        """
        from . import abs_max

        amax = dict.fromkeys(self.binned, 0.0)
        total = self._total()
        found: dict[str, float] = {}
        held = None

        def work(name: str, arr: np.ndarray, threads: int | None) -> None:
            found[name] = float(abs_max(arr, threads=threads))

        for run in self._runs():
            found.clear()
            self._each_tensor(run.pairs, work)
            for name, value in found.items():
                amax[name] = max(amax[name], value)
            self._tick("range", run.index + 1, total)
            if run.last:
                held = run
            del run  # every array is read: the outputs go back to ORT's arena
        return amax, held

    def histogram_pass(
        self, ranges: Mapping[str, float] | None, *, mode: str, held: _Run | None = None
    ) -> CalibrationState:
        """Histograms of every batch; `held` (range_pass's last batch) is binned first and not run again."""
        from . import Histogram

        # exact mode without ranges: power-of-two ranges grown in this one read (module notes)
        one_read = mode == "two-pass" and ranges is None
        phase = "histogram" if mode == "two-pass" and not one_read else "collect"
        ranges = ranges or {}
        histograms = {
            name: Histogram(
                self.options.num_bins,
                range_max=ranges.get(name) or None,
                count_zeros=self.options.count_zeros,
                pow2=one_read,
            )
            for name in self.binned
        }
        total = self._total()
        batches = samples = 0
        fraction = self.options.snapshot
        snap_at = (
            max(1, min(total - 1, int(np.ceil(fraction * total))))
            if fraction is not None and total is not None and total >= 2
            else None
        )
        partial = None

        def work(name: str, arr: np.ndarray, threads: int | None) -> None:
            hist = histograms[name]
            before = hist.nonfinite
            hist.update(arr, threads=threads)
            if hist.nonfinite != before and not self.options.ignore_nonfinite:
                self._nonfinite(name)

        def runs() -> Iterable[_Run]:
            # exact mode's histograms depend on the values alone: big batches may run in parts
            if held is None:
                yield from self._runs(split=one_read)
                return
            yield held
            yield from self._runs(stop=held.index, split=one_read)

        for run in runs():
            self._each_tensor(run.pairs, work)
            if self.output_rows is not None:
                self.output_rows.add(run.feeds, dict(run.pairs))
            first = next(iter(run.feeds.values()), None)
            samples += int(first.shape[0]) if first is not None and first.ndim else 1
            if not run.end:
                run.release()
                del run
                continue
            batches += 1
            self._tick(phase, batches, total)
            if batches == snap_at:
                partial = CalibrationState(
                    self._ordered({n: h.copy() for n, h in histograms.items()}),
                    mode,
                    batches,
                    samples,
                )
            run.release()  # every array is read: the outputs go back to ORT's arena
            del run
        if not batches:
            raise CalibrationError(
                f"{self.source.describe()}: gave no batches; nothing to calibrate"
            )
        if one_read:  # what a fixed range from a first pass gives: the final range, marked fixed
            for hist in histograms.values():
                hist.fixed = hist.range_max > 0
        state = CalibrationState(
            self._ordered(histograms), mode, batches, samples, [self.source.describe()]
        )
        if one_read and partial is not None:  # the early histograms at the final ranges, exactly
            for name, early in partial.histograms.items():
                early.grow_to(state.histograms[name].range_max)
                early.fixed = state.histograms[name].fixed
        state.partial = partial
        state.outputs = self.output_rows
        return state

    def _ordered(self, histograms: Mapping[str, Any]) -> dict[str, Any]:
        """Every collected name in graph order; an alias gets a copy of its root's histogram."""
        return {
            name: histograms[name] if name in histograms else histograms[self.aliases[name]].copy()
            for name in self.names
        }

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


def resolve_mode(mode: str, *, method: str = "entropy") -> str:
    """'auto' -> two-pass (exact) whenever the method needs a histogram, whatever the source.

    Exact mode reads the data once, like single-pass, and costs the same, so a one-pass source
    (a generator) gets order-independent results too; single-pass stays for who asks for it.
    """
    if mode not in MODES:
        raise UsageError(f"range mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto":
        return "single-pass" if method == "max" else "two-pass"
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
    mode = resolve_mode(options.mode, method=method)
    log.info("collecting %d tensors, %s, from %s", len(collector.names), mode, source.describe())
    if initial_ranges:
        return collector.histogram_pass(initial_ranges, mode="single-pass")
    # two-pass: powers of two, grown in one read (the histograms of any split of the data merge
    # into exactly these); single-pass: the first batch's max
    return collector.histogram_pass(None, mode=mode)
