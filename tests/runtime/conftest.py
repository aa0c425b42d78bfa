"""Fixtures for runtime tests: tiny ONNX models made in code, and a fake TensorRT engine.

The fake implements exactly the documented TensorRT 10/11 calls TrtRunner uses
(num_io_tensors, get_tensor_name/mode/dtype/shape, num_optimization_profiles,
get_tensor_profile_shape, create_execution_context, set_optimization_profile_async,
set_input_shape, get_tensor_shape, set_tensor_address, execute_async_v3), so binding
logic is tested without TensorRT or a GPU. `fake_cuda` stands in for `runtime.cuda`:
work queued on a stream runs only when the host synchronizes, as on a GPU.
"""

from __future__ import annotations

import enum
import itertools
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.calls: list[tuple] = []
        self.active_optimization_profile = 0

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        self.calls.append(("set_optimization_profile_async", profile_index, stream_handle))
        if not 0 <= profile_index < self.engine.num_optimization_profiles:
            return False
        self.active_optimization_profile = profile_index
        self.input_shapes.clear()  # TensorRT: input shapes must be set again after a switch
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.calls.append(("set_input_shape", name, tuple(shape)))
        profile = self.engine.profile_list[self.active_optimization_profile]
        lo, _, hi = profile.get(name, (None, None, None))
        declared = self.engine.shapes[name]
        if len(shape) != len(declared):
            return False
        if lo is not None and any(s < a or s > b for s, a, b in zip(shape, lo, hi, strict=True)):
            return False
        if any(d >= 0 and d != s for d, s in zip(declared, shape, strict=False)):
            return False
        self.input_shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.inputs:
            return self.input_shapes.get(name, self.engine.shapes[name])
        if any(
            n not in self.input_shapes and -1 in self.engine.shapes[n] for n in self.engine.inputs
        ):
            return self.engine.shapes[name]
        full = {n: self.input_shapes.get(n, self.engine.shapes[n]) for n in self.engine.inputs}
        return self.engine.output_shape(name, full)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.calls.append(("set_tensor_address", name, ptr))
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.calls.append(("execute_async_v3", stream_handle))
        return self.engine.on_execute(self, stream_handle)


ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


class FakeEngine:
    """tensors: (name, "INPUT"|"OUTPUT", dtype name, shape with -1 for dynamic).

    profiles: {input: (min, opt, max)} for one optimization profile, or a list of such dicts.
    """

    def __init__(
        self,
        tensors: list[tuple[str, str, str, tuple[int, ...]]],
        *,
        profiles: dict[str, ShapeRange] | list[dict[str, ShapeRange]] | None = None,
        output_shape: Callable[[str, dict], tuple[int, ...]] | None = None,
        on_execute: Callable[[FakeContext, int], bool] | None = None,
    ) -> None:
        self.tensors = tensors
        self.shapes = {n: tuple(s) for n, _, _, s in tensors}
        self.inputs = [n for n, m, _, _ in tensors if m == "INPUT"]
        self.profile_list = list(profiles) if isinstance(profiles, list) else [profiles or {}]
        self.profiles = self.profile_list[0]
        first_input = self.inputs[0] if self.inputs else None
        self.output_shape = output_shape or (lambda name, ins: ins[first_input])
        self.on_execute = on_execute or (lambda ctx, stream: True)
        self.contexts: list[FakeContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, index: int) -> str:
        return self.tensors[index][0]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return next(TensorIOMode[m] for n, m, _, _ in self.tensors if n == name)

    def get_tensor_dtype(self, name: str) -> DataType:
        return next(DataType[d] for n, _, d, _ in self.tensors if n == name)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profile_list)

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> tuple:
        return self.profile_list[profile_index][name]

    def create_execution_context(self) -> FakeContext:
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


@pytest.fixture
def fake_engine() -> type[FakeEngine]:
    return FakeEngine


def make_affine_model(
    shape: list[int | str],
    *,
    scale: np.ndarray | float = 2.0,
    bias: np.ndarray | float = 0.5,
    dtype: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    """y = x * scale + bias, with named input x and output y."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    scale_arr = np.asarray(scale, dtype=np_dtype)
    bias_arr = np.asarray(bias, dtype=np_dtype)
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["xs"]),
            helper.make_node("Add", ["xs", "bias"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("y", dtype, shape)],
        initializer=[
            numpy_helper.from_array(scale_arr, "scale"),
            numpy_helper.from_array(bias_arr, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def affine_model() -> Callable[..., onnx.ModelProto]:
    return make_affine_model


def ppocr_model(name: str) -> Path:
    """Path of a PP-OCR model shipped by rapidocr-onnxruntime; skip when not installed."""
    pkg = pytest.importorskip("rapidocr_onnxruntime")
    path = Path(pkg.__file__).parent / "models" / name
    if not path.is_file():
        pytest.skip(f"{name} not shipped by this rapidocr_onnxruntime")
    return path


@pytest.fixture
def ppocr() -> Callable[[str], Path]:
    return ppocr_model


def make_fake_cuda() -> types.SimpleNamespace:
    """A stand-in for `onnx2trt_lib.runtime.cuda` with deferred streams and host-memory "device" buffers.

    Copies and kernels queued on a stream run only at `synchronize()` (stream or event), so a
    test sees what a real GPU would do to host buffers read before the run finished.
    `memory[ptr]` is a device buffer's bytes; `enqueue(stream_handle, fn)` queues work.
    """
    memory: dict[int, np.ndarray] = {}
    streams: dict[int, Stream] = {}
    counter = itertools.count(0x10000, 0x10000)

    class Stream:
        def __init__(self) -> None:
            self.ptr = next(counter)
            self.queue: list[Callable[[], None]] = []
            streams[self.ptr] = self

        @classmethod
        def borrow(cls, ptr: int) -> Stream:
            return streams.get(int(ptr)) or cls()

        def synchronize(self) -> None:
            while self.queue:
                self.queue.pop(0)()

        def record(self, event: Event | None = None) -> Event:
            event = event or Event()
            event.stream = self
            return event

        def wait_stream(self, other: Any) -> None:
            other = other if isinstance(other, Stream) else streams.get(int(other))
            if other is not None:
                other.synchronize()

        def close(self) -> None:
            pass

    class Event:
        def __init__(self, *, timing: bool = True) -> None:
            self.stream: Stream | None = None

        def synchronize(self) -> None:
            if self.stream is not None:
                self.stream.synchronize()

        def query(self) -> bool:
            return self.stream is None or not self.stream.queue

        def close(self) -> None:
            pass

    def _queue(stream: Any, fn: Callable[[], None]) -> None:
        handle = stream.ptr if isinstance(stream, Stream) else int(stream or 0)
        if handle in streams:
            streams[handle].queue.append(fn)
        else:  # the default stream: synchronous here
            fn()

    class DeviceBuffer:
        def __init__(self, nbytes: int) -> None:
            self.nbytes = int(nbytes)
            self.ptr = next(counter)
            memory[self.ptr] = np.zeros(max(self.nbytes, 1), np.uint8)

        def copy_from_host(self, src: np.ndarray, *, stream: Any = None) -> None:
            def run() -> None:  # reads `src` when the stream gets there, like cudaMemcpyAsync
                raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
                memory[self.ptr][: raw.size] = raw

            _queue(stream, run)

        def copy_to_host(self, dst: np.ndarray, *, stream: Any = None) -> None:
            def run() -> None:
                raw = dst.view(np.uint8).reshape(-1)
                raw[:] = memory[self.ptr][: raw.size]

            _queue(stream, run)

        def view(self, shape: tuple[int, ...], dtype: Any) -> tuple:
            return ("device-view", self.ptr, tuple(shape), np.dtype(dtype))

        def close(self) -> None:
            memory.pop(self.ptr, None)

    class HostBuffer:
        def __init__(self, nbytes: int) -> None:
            self.nbytes = int(nbytes)
            self._data = np.zeros(max(self.nbytes, 1), np.uint8)

        def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            return self._data[: count * dt.itemsize].view(dt).reshape(shape)

        def close(self) -> None:
            pass

    class CudaGraph:
        ready = False

        def close(self) -> None:
            pass

    def read(ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        return memory[ptr][: count * dt.itemsize].view(dt).reshape(shape).copy()

    def write(ptr: int, arr: np.ndarray) -> None:
        raw = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        memory[ptr][: raw.size] = raw

    return types.SimpleNamespace(
        Stream=Stream,
        Event=Event,
        DeviceBuffer=DeviceBuffer,
        HostBuffer=HostBuffer,
        CudaGraph=CudaGraph,
        is_device_array=lambda obj: False,
        device_view=None,
        memory=memory,
        enqueue=_queue,
        read=read,
        write=write,
    )


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """`fake_cuda` installed as the `cuda` module TrtRunner uses (see make_fake_cuda)."""
    from onnx2trt_lib.runtime import trt_runner

    fake = make_fake_cuda()
    monkeypatch.setattr(trt_runner, "cuda", fake)
    return fake
