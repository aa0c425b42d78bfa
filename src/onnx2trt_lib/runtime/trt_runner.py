"""TrtRunner: a thin layer over `runtime.cuda` and the documented TensorRT 10/11 Python API.

The calls, in the order the TensorRT documentation gives them:

- `Runtime.deserialize_cuda_engine(bytes)` -> `ICudaEngine`
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Runtime.html)
- `ICudaEngine.num_io_tensors`, `get_tensor_name(i)`, `get_tensor_mode(name)`,
  `get_tensor_dtype(name)`, `get_tensor_shape(name)`, `num_optimization_profiles`,
  `get_tensor_profile_shape(name, profile_index)`, `create_execution_context()`
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Engine.html)
- `IExecutionContext.active_optimization_profile`, `set_optimization_profile_async(profile_index,
  stream_handle)` (the first profile whose MIN..MAX holds every input shape),
  `set_input_shape(name, shape)`, `get_tensor_shape(name)` (output shapes once every input
  shape is set), `set_tensor_address(name, ptr)`, `execute_async_v3(stream_handle)`
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/ExecutionContext.html)
- CUDA graphs: run `execute_async_v3` once outside capture (it may do deferred work), then
  capture it on the stream; replay while shapes and addresses stay the same (Developer Guide,
  "CUDA Graphs": https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-with-cuda-graphs.html)

Everything TensorRT-free (which tensors exist, shapes to set, which buffers to grow) lives in
`IOBinding`, which tests drive with a fake engine.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import _optional
from ..errors import ModelLoadError, RuntimeExecutionError
from . import cuda
from .base import (
    PendingResult,
    Runner,
    TensorSpec,
    check_array,
    check_dtype_shape,
    check_feed_names,
)

log = logging.getLogger(__name__)

# trt.DataType member name -> numpy dtype (by name so no TensorRT import is needed to read specs)
_TRT_DTYPES: dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


def _enum_name(value: Any) -> str:
    name = getattr(value, "name", None)
    return str(name if name is not None else value).rsplit(".", 1)[-1]


def profile_ranges(engine: Any) -> list[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]:
    """Per optimization profile, {dynamic input: (min shape, max shape)}."""
    dynamic = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        if _enum_name(engine.get_tensor_mode(name)) == "INPUT" and any(
            int(d) < 0 for d in engine.get_tensor_shape(name)
        ):
            dynamic.append(name)
    count = max(
        int(engine.num_optimization_profiles), 1
    )  # a static engine needs no profile: one empty table
    ranges = []
    for profile in range(count):
        table = {}
        for name in dynamic:
            lo, _opt, hi = engine.get_tensor_profile_shape(name, profile)
            table[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in hi))
        ranges.append(table)
    return ranges


def specs_from_engine(
    engine: Any, profile: int | None = None
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of an ICudaEngine, with min/max shapes for dynamic inputs.

    min/max are those of `profile`, or with None the smallest min and largest max over all
    profiles: the spec then refuses only shapes no profile takes, and IOBinding picks the profile.
    """
    ranges = profile_ranges(engine)
    if profile is not None:
        ranges = [ranges[profile]]
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        mode = _enum_name(engine.get_tensor_mode(name))
        dtype_name = _enum_name(engine.get_tensor_dtype(name))
        if dtype_name not in _TRT_DTYPES:
            raise RuntimeExecutionError(
                f"engine tensor {name!r} has type {dtype_name}, which has no numpy equivalent; "
                "rebuild with a float32/float16/int I/O type"
            )
        dims = tuple(int(d) for d in engine.get_tensor_shape(name))
        shape = tuple(None if d < 0 else d for d in dims)
        min_shape = max_shape = None
        if mode == "INPUT" and any(d is None for d in shape):
            lows = [table[name][0] for table in ranges]
            highs = [table[name][1] for table in ranges]
            min_shape = tuple(min(axis) for axis in zip(*lows, strict=True))
            max_shape = tuple(max(axis) for axis in zip(*highs, strict=True))
        spec = TensorSpec(name, np.dtype(_TRT_DTYPES[dtype_name]), shape, min_shape, max_shape)
        if mode == "INPUT":
            inputs.append(spec)
        elif mode == "OUTPUT":
            outputs.append(spec)
    return tuple(inputs), tuple(outputs)


class IOBinding:
    """Profile, input shapes, output shapes, grow-only device buffers and tensor addresses for one context.

    `allocate(nbytes)` returns an object with `.ptr`, `.nbytes` and `.close()` (a
    `cuda.DeviceBuffer` in real use). Buffers are replaced only when a larger size is needed.
    """

    def __init__(
        self, engine: Any, context: Any, allocate: Callable[[int], Any], *, where: str = "engine"
    ) -> None:
        self.context = context
        self.where = where
        self.profiles = profile_ranges(engine)
        # the context's profile (TensorRT 10 assigns 0 to a new one; -1 would mean none yet)
        self.profile = int(getattr(context, "active_optimization_profile", 0))
        self.inputs, self.outputs = specs_from_engine(engine)
        self._specs = {spec.name: spec for spec in self.inputs + self.outputs}
        self._allocate = allocate
        self.buffers: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._bound: dict[str, int] = {}
        self._last_key: tuple | None = None
        self._last_outputs: dict[str, tuple[int, ...]] = {}
        self.allocations = 0  # how many device allocations were made (tests check growth)

    def set_input_shapes(
        self, shapes: Mapping[str, tuple[int, ...]], *, stream: int = 0
    ) -> dict[str, tuple[int, ...]]:
        """Select the profile, set each input shape that changed; return every output's resolved shape.

        The profile is the first whose MIN..MAX holds every input shape; switching is queued
        on `stream` (the stream the run is enqueued on), and all input shapes are set again.
        """
        key = tuple(tuple(int(s) for s in shapes[spec.name]) for spec in self.inputs)
        if key == self._last_key:
            return dict(self._last_outputs)
        profile = self._pick_profile({spec.name: key[i] for i, spec in enumerate(self.inputs)})
        if profile != self.profile:
            if not self.context.set_optimization_profile_async(profile, stream):
                raise RuntimeExecutionError(
                    f"{self.where}: TensorRT refused to switch to optimization profile {profile}"
                )
            self.profile = profile
            self._last_key = None
            for spec in self.inputs:
                self.shapes.pop(spec.name, None)
        for spec in self.inputs:
            shape = tuple(int(s) for s in shapes[spec.name])
            if self.shapes.get(spec.name) == shape:
                continue
            if not self.context.set_input_shape(spec.name, shape):
                lo, hi = self.profiles[self.profile].get(
                    spec.name, (spec.min_shape or (), spec.max_shape or ())
                )
                raise RuntimeExecutionError(
                    f"{self.where}: TensorRT refused shape {list(shape)} for input {spec.name!r} "
                    f"(profile {self.profile} min {list(lo)} max {list(hi)})"
                )
            self.shapes[spec.name] = shape
        out_shapes = {}
        for spec in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise RuntimeExecutionError(
                    f"{self.where}: output {spec.name!r} has a data-dependent shape {list(shape)}; "
                    "TrtRunner needs output shapes known from input shapes"
                )
            out_shapes[spec.name] = shape
            self.shapes[spec.name] = shape
        self._last_key, self._last_outputs = key, dict(out_shapes)
        return out_shapes

    def _pick_profile(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        """The first profile whose range holds every dynamic input's shape; an error lists them all."""

        def fits(table: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> bool:
            return all(
                len(shapes[name]) == len(lo)
                and all(a <= s <= b for s, a, b in zip(shapes[name], lo, hi, strict=True))
                for name, (lo, hi) in table.items()
            )

        for index, table in enumerate(self.profiles):
            if fits(table):
                return index
        given = ", ".join(f"{name} {list(shapes[name])}" for name in self.profiles[0])
        ranges = "; ".join(
            f"profile {index}: "
            + ", ".join(f"{name} {list(lo)}..{list(hi)}" for name, (lo, hi) in table.items())
            for index, table in enumerate(self.profiles)
        )
        raise RuntimeExecutionError(
            f"{self.where}: no optimization profile takes input shapes {given} ({ranges}); "
            "rebuild with a profile that covers them or resize the inputs"
        )

    def nbytes(self, name: str) -> int:
        return math.prod(self.shapes[name]) * self._specs[name].dtype.itemsize

    def spec(self, name: str) -> TensorSpec:
        return self._specs[name]

    def ensure_buffer(self, name: str) -> Any:
        """The device buffer for `name`, grown (never shrunk) to the current shape, and bound."""
        needed = self.nbytes(name)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.nbytes < needed:
            if buffer is not None:
                self._bound.pop(name, None)
                buffer.close()
            buffer = self._allocate(needed)
            self.allocations += 1
            self.buffers[name] = buffer
        self.bind(name, buffer.ptr)
        return buffer

    def bind(self, name: str, ptr: int) -> None:
        """`set_tensor_address`, skipped when the address is already bound."""
        if self._bound.get(name) == ptr:
            return
        if not self.context.set_tensor_address(name, ptr):
            raise RuntimeExecutionError(
                f"{self.where}: set_tensor_address failed for tensor {name!r}"
            )
        self._bound[name] = ptr

    def addresses(self) -> dict[str, int]:
        return dict(self._bound)

    def close(self) -> None:
        for buffer in self.buffers.values():
            buffer.close()
        self.buffers.clear()
        self._bound.clear()


class _Staging:
    """Grow-only page-locked host buffers, one per tensor, for host<->device copies."""

    def __init__(self) -> None:
        self.buffers: dict[str, cuda.HostBuffer] = {}
        self._views: dict[str, tuple[tuple, np.ndarray]] = {}
        self.allocations = 0

    def array(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        cached = self._views.get(name)
        if cached is not None and cached[0] == (shape, dtype):
            return cached[1]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buffer = self.buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            if buffer is not None:
                buffer.close()
            buffer = self.buffers[name] = cuda.HostBuffer(nbytes)
            self.allocations += 1
        view = buffer.array(shape, dtype)
        self._views[name] = ((shape, dtype), view)
        return view

    def close(self) -> None:
        self._views.clear()
        for buffer in self.buffers.values():
            buffer.close()
        self.buffers.clear()


class TrtRunner(Runner):
    """Runs a serialized TensorRT engine: path (through `build.engine.load_engine`), bytes, or ICudaEngine.

    Host (numpy) inputs go through pinned staging buffers; device arrays (torch, cupy: CAI or
    DLPack) are bound zero-copy. `cuda_graph=True` captures copy-in, execute and copy-out as
    one CUDA graph for each new set of input shapes and replays it while they repeat.
    """

    def __init__(
        self,
        engine: Any,
        *,
        cuda_graph: bool = False,
        stream: cuda.Stream | int | None = None,
        backend: str | None = None,
        name: str | None = None,
        allow_host_code: bool = False,
    ) -> None:
        self.name = name or (
            Path(engine).name if isinstance(engine, (str, os.PathLike)) else "engine"
        )
        self._engine, self._keepalive = load_trt_engine(
            engine, backend=backend, allow_host_code=allow_host_code
        )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeExecutionError(
                f"{self.name}: create_execution_context failed (out of device memory?)"
            )
        if isinstance(stream, cuda.Stream):
            self._stream = stream
        elif stream is not None:
            self._stream = cuda.Stream.borrow(int(stream))
        else:
            self._stream = cuda.Stream()
        self._binding = IOBinding(self._engine, self._context, cuda.DeviceBuffer, where=self.name)
        self._staging = _Staging()
        self._use_graph = cuda_graph
        self._graph = cuda.CudaGraph()
        self._graph_key: tuple | None = None
        self._done = cuda.Event(timing=False)
        self._pending: _Waiter | None = (
            None  # the last run's result while it may still need the staging buffers
        )

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._binding.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._binding.outputs

    @property
    def stream(self) -> cuda.Stream:
        return self._stream

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.infer_async(feed).wait()

    def infer_async(
        self, feed: Mapping[str, Any], *, stream: Any = None, outputs_on_device: bool = False
    ) -> PendingResult:
        """Queue copy-in, execute_async_v3 and copy-out on the runner's stream; `wait()` for outputs.

        `stream` (a `cuda.Stream` or a raw handle such as torch's `cuda_stream`) is where the
        caller produced device inputs: the runner's stream waits for it (an event, no host
        block). Device arrays that carry a CAI v3 stream are waited for the same way. With
        `outputs_on_device` the result holds `cuda.DeviceView`s of internal buffers, valid
        until the next call.

        One run at a time, and each result owns its outputs: runs share pinned staging
        buffers, so a new call first finishes the previous result (waits for its run and
        copies its outputs out) before reusing them. Two calls in a row thus give two
        correct results; the second call just blocks until the first run is done.
        """
        where = self.name
        if self._context is None:
            raise RuntimeExecutionError(f"{where}: runner was closed")
        check_feed_names(feed, self.inputs, where)
        self._finish_pending()  # the previous run's outputs leave the staging buffers we reuse
        host: dict[str, np.ndarray] = {}
        device: dict[str, cuda.DeviceView] = {}
        for spec in self.inputs:
            value = feed[spec.name]
            if cuda.is_device_array(value):
                view = cuda.device_view(value)
                check_dtype_shape(view.dtype, view.shape, spec, where)
                device[spec.name] = view
            else:
                host[spec.name] = check_array(value, spec, where)
        shapes = {n: a.shape for n, a in host.items()} | {n: v.shape for n, v in device.items()}
        out_shapes = self._binding.set_input_shapes(shapes, stream=self._stream.ptr)
        if stream is not None:
            self._stream.wait_stream(stream if isinstance(stream, cuda.Stream) else int(stream))
        for name, view in device.items():
            producer = (
                0 if view.stream in (None, 1) else view.stream
            )  # CAI v3: 1 = legacy default stream
            self._stream.wait_stream(producer)
            self._binding.bind(name, view.ptr)
        for name in host:
            self._binding.ensure_buffer(name)
        for name in out_shapes:
            self._binding.ensure_buffer(name)

        staged_in = {n: self._staging.array(n, a.shape, a.dtype) for n, a in host.items()}
        for name, arr in host.items():
            np.copyto(staged_in[name], arr)
        staged_out = {}
        if not outputs_on_device:
            staged_out = {
                s.name: self._staging.array(s.name, out_shapes[s.name], s.dtype)
                for s in self.outputs
            }

        if self._use_graph and not device:
            self._run_graph(staged_in, staged_out)
        else:
            self._enqueue(staged_in, staged_out)
        self._stream.record(self._done)

        if outputs_on_device:
            views = {
                s.name: self._binding.buffers[s.name].view(out_shapes[s.name], s.dtype)
                for s in self.outputs
            }
            self._pending = _Waiter(self._done, lambda: views)
        else:
            self._pending = _Waiter(
                self._done, lambda: {n: a.copy() for n, a in staged_out.items()}
            )
        return PendingResult(waiter=self._pending)

    def _finish_pending(self) -> None:
        """Wait for the last run and let its result copy its outputs out of the staging buffers."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.wait()
        self._done.synchronize()

    # -- the three steps of one run, and their graph form ------------------------------------
    def _enqueue(self, staged_in: dict[str, np.ndarray], staged_out: dict[str, np.ndarray]) -> None:
        for name, arr in staged_in.items():
            self._binding.buffers[name].copy_from_host(arr, stream=self._stream)
        if not self._context.execute_async_v3(self._stream.ptr):
            raise RuntimeExecutionError(
                f"{self.name}: execute_async_v3 failed (see the TensorRT log above)"
            )
        for name, arr in staged_out.items():
            self._binding.buffers[name].copy_to_host(arr, stream=self._stream)

    def _run_graph(
        self, staged_in: dict[str, np.ndarray], staged_out: dict[str, np.ndarray]
    ) -> None:
        # a graph bakes in addresses and sizes: those change only with a new allocation or shape
        key = (
            self._binding.allocations,
            self._staging.allocations,
            tuple(self._binding.shapes.items()),
        )
        if key != self._graph_key or not self._graph.ready:
            # TensorRT may do deferred work on the first enqueue after a shape change: not capturable.
            self._enqueue(staged_in, staged_out)
            try:
                with self._graph.capture(self._stream):
                    self._enqueue(staged_in, staged_out)
            except RuntimeExecutionError as exc:
                log.warning(
                    "%s: CUDA graph capture failed (%s); running without graphs", self.name, exc
                )
                self._use_graph = False
                return
            self._graph_key = key
            return  # the uncaptured run above already produced this call's outputs
        self._graph.launch(self._stream)

    def close(self) -> None:
        if self._context is None:
            return
        try:
            self._stream.synchronize()
            self._finish_pending()  # a result not yet waited for keeps its outputs past close()
        finally:
            self._graph.close()
            self._binding.close()
            self._staging.close()
            self._done.close()
            self._stream.close()
            self._context = None
            self._engine = None
            self._keepalive = None


class _Waiter:
    """One run's result: waits for its event once and keeps the outputs it collected.

    The runner calls `wait()` itself before the next run reuses the staging buffers (and
    re-records the event), so a result waited for later still holds its own run's outputs.
    """

    def __init__(self, event: cuda.Event, collect: Callable[[], dict[str, Any]]) -> None:
        self._event, self._collect = event, collect
        self._outputs: dict[str, Any] | None = None

    def done(self) -> bool:
        return self._outputs is not None or self._event.query()

    def wait(self) -> dict[str, Any]:
        if self._outputs is None:
            self._event.synchronize()
            self._outputs = self._collect()
        return self._outputs


# ------------------------------------------------------------------------------ loading


def load_trt_engine(
    source: Any, *, backend: str | None = None, allow_host_code: bool = False
) -> tuple[Any, Any]:
    """(ICudaEngine, objects to keep alive) from an engine object, engine bytes or an engine file.

    Files go through `onnx2trt_lib.build.engine.load_engine` (which checks the JSON sidecar
    against the installed backend); bytes are deserialized here.
    Engine host code (version-compatible engines) runs only with `allow_host_code=True`.
    """
    if hasattr(source, "create_execution_context"):
        return source, None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return engine_from_bytes(bytes(source), backend=backend, where="engine bytes")
    path = Path(source)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such engine file")
    from ..build.engine import load_engine  # LoadedEngine(engine, runtime, backend, sidecar)

    chosen = backend or "auto"
    if allow_host_code:
        loaded = load_engine(path, chosen, allow_host_code=True)
    else:  # the plain call (test doubles of load_engine take only the path)
        loaded = load_engine(path) if chosen == "auto" else load_engine(path, chosen)
    return _unwrap_engine(loaded, path), loaded


def _unwrap_engine(loaded: Any, path: Path) -> Any:
    candidates = (
        list(loaded) if isinstance(loaded, tuple) else [loaded, getattr(loaded, "engine", None)]
    )
    for item in candidates:
        if hasattr(item, "create_execution_context"):
            return item
    raise RuntimeExecutionError(
        f"{path}: load_engine returned {type(loaded).__name__}, not a TensorRT engine"
    )


def engine_from_bytes(
    data: bytes, *, backend: str | None = None, where: str = "engine"
) -> tuple[Any, Any]:
    """Deserialize with `trt.Runtime(logger).deserialize_cuda_engine(data)`; the runtime is kept alive."""
    trt = _backend_module(backend)
    logger = _make_logger(trt)
    runtime = trt.Runtime(logger)
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # some versions raise instead of returning None
        engine, reason = (
            None,
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )
    else:
        errors = getattr(logger, "errors", [])
        reason = errors[0].split(" In ")[0] if errors else "see the TensorRT log"
    if engine is None:
        version = getattr(trt, "__version__", "?")
        raise RuntimeExecutionError(
            f"{where}: {trt.__name__} {version} cannot deserialize this engine ({reason}); it was probably built "
            "by another TensorRT version or backend, or for another GPU: rebuild it with `onnx2trt build`"
        )
    return engine, (runtime, logger)


def _backend_module(backend: str | None) -> Any:
    if backend in (None, "auto"):
        if _optional.available("tensorrt"):
            return _optional.tensorrt()
        if _optional.available("tensorrt_rtx"):
            return _optional.tensorrt_rtx()
        return _optional.tensorrt()  # raises MissingDependencyError naming the extra
    if backend == "tensorrt":
        return _optional.tensorrt()
    if backend in ("tensorrt_rtx", "tensorrt-rtx"):
        return _optional.tensorrt_rtx()
    raise RuntimeExecutionError(
        f"unknown TensorRT backend {backend!r}; use auto, tensorrt or tensorrt-rtx"
    )


def _make_logger(trt: Any) -> Any:
    """A trt.ILogger that forwards to `logging` and keeps error messages for our exceptions.

    Built at call time (TensorRT is never imported at module import).
    """

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = _enum_name(severity)
            if level in ("INTERNAL_ERROR", "ERROR"):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif level == "WARNING":
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    try:
        return _Logger()
    except Exception:  # pragma: no cover - a binding without ILogger subclassing
        return trt.Logger(trt.Logger.WARNING)
