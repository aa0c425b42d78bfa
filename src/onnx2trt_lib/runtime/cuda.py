"""Device buffers, page-locked host buffers, streams, events and CUDA graphs on cuda-python.

Why a module of our own rather than pycuda or a framework: cuda-python is NVIDIA's thin,
always-matching binding of the CUDA runtime, and TensorRT only needs raw pointers and a
stream. Every call goes through `call()`, which turns a non-success `cudaError_t` into a
`CudaError` naming the call and the error. Every resource is freed deterministically
(`close()` / `with`) and, as a safety net, when garbage collected (`weakref.finalize`).

`cuda.bindings.runtime` (cuda-python >= 12.6) is used, the older `cuda.cudart` as fallback,
both through `onnx2trt_lib._optional.cudart()`; nothing is imported at module import.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._optional import cudart
from ..errors import RuntimeExecutionError

log = logging.getLogger(__name__)

# cudaStreamNonBlocking: our streams never synchronise implicitly with the legacy default stream.
_STREAM_NON_BLOCKING = 0x1
_EVENT_DISABLE_TIMING = 0x2
_HOST_ALLOC_DEFAULT = 0x0
# special stream handles of __cuda_array_interface__ v3: 1 = legacy default, 2 = per-thread default
_CAI_LEGACY_STREAMS = (1, 2)


class CudaError(RuntimeExecutionError):
    """A CUDA runtime call returned an error; `.call` and `.error_name` say which and what."""

    def __init__(self, call: str, error_name: str, error_string: str) -> None:
        self.call = call
        self.error_name = error_name
        super().__init__(f"{call} failed: {error_name} ({error_string})")


_RT: Any = None


def _rt() -> Any:
    """The cudart module, imported once (every call goes through here, so keep it cheap)."""
    global _RT
    if _RT is None:
        _RT = cudart()
    return _RT


def _error_text(rt: Any, err: Any) -> tuple[str, str]:
    try:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        return name.decode(), text.decode()
    except Exception:  # a broken binding must not hide the original error
        return str(err), "no description"


def check(result: Any, call: str) -> Any:
    """Unpack a cuda-python result tuple `(err, *values)`; raise CudaError unless success.

    Returns None, the single value, or a tuple of values.
    """
    rt = _rt()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != 0:  # cudaSuccess; cudaError_t is an IntEnum
        name, text = _error_text(rt, err)
        raise CudaError(call, name, text)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def call(name: str, *args: Any) -> Any:
    """Call `cudart.<name>(*args)` and check its error code (see `check`)."""
    rt = _rt()
    return check(getattr(rt, name)(*args), name)


def _quiet(name: str, *args: Any) -> None:
    """Free-style call for finalizers: log instead of raising (nobody can catch it there)."""
    try:
        call(name, *args)
    except Exception as exc:  # pragma: no cover - only at interpreter teardown or a broken context
        log.warning("%s during cleanup: %s", name, exc)


def device_count() -> int:
    """Number of visible CUDA devices; raises CudaError when there is no driver."""
    return int(call("cudaGetDeviceCount"))


def gpu_available() -> bool:
    """True when cuda-python imports and at least one device answers; never raises."""
    try:
        return device_count() > 0
    except Exception:
        return False


def mem_get_info() -> tuple[int, int]:
    """(free, total) device memory in bytes, from cudaMemGetInfo."""
    free, total = call("cudaMemGetInfo")
    return int(free), int(total)


def synchronize() -> None:
    call("cudaDeviceSynchronize")


def _memcpy_kind(name: str) -> Any:
    return getattr(_rt().cudaMemcpyKind, name)


def _stream_handle(stream: Stream | int | None) -> Any:
    if stream is None:
        return 0
    if isinstance(stream, Stream):
        return stream.handle
    return int(stream)


# ---------------------------------------------------------------------------------- streams


class Stream:
    """A non-blocking CUDA stream we own, or a borrowed one (`Stream.borrow(ptr)`, not destroyed)."""

    def __init__(self, *, _borrowed: int | None = None) -> None:
        if _borrowed is not None:
            self.handle = _rt().cudaStream_t(_borrowed)
            self._finalizer = None
            return
        self.handle = call("cudaStreamCreateWithFlags", _STREAM_NON_BLOCKING)
        self._finalizer = weakref.finalize(self, _quiet, "cudaStreamDestroy", self.handle)

    @classmethod
    def borrow(cls, ptr: int) -> Stream:
        """Wrap someone else's stream (torch's `stream.cuda_stream`, cupy's `stream.ptr`)."""
        return cls(_borrowed=int(ptr))

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)

    def record(self, event: Event | None = None) -> Event:
        """Record `event` (a new one if None) on this stream and return it."""
        event = event or Event()
        call("cudaEventRecord", event.handle, self.handle)
        return event

    def wait(self, event: Event) -> None:
        """Make later work on this stream wait for `event` (no host block)."""
        call("cudaStreamWaitEvent", self.handle, event.handle, 0)

    def wait_stream(self, other: Stream | int) -> None:
        """Order this stream after everything queued so far on `other`."""
        other_stream = other if isinstance(other, Stream) else Stream.borrow(int(other))
        with Event(timing=False) as event:
            other_stream.record(event)
            self.wait(event)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Stream(0x{self.ptr:x})"


class Event:
    """A CUDA event: ordering between streams and, with timing, elapsed GPU time."""

    def __init__(self, *, timing: bool = True) -> None:
        flags = 0 if timing else _EVENT_DISABLE_TIMING
        self.handle = call("cudaEventCreateWithFlags", flags)
        self._finalizer = weakref.finalize(self, _quiet, "cudaEventDestroy", self.handle)

    def record(self, stream: Stream | int | None = None) -> Event:
        call("cudaEventRecord", self.handle, _stream_handle(stream))
        return self

    def synchronize(self) -> None:
        call("cudaEventSynchronize", self.handle)

    def query(self) -> bool:
        """True when all work before the record has finished; False while still pending."""
        rt = _rt()
        err = rt.cudaEventQuery(self.handle)
        err = err[0] if isinstance(err, tuple) else err
        if err == rt.cudaError_t.cudaErrorNotReady:
            return False
        check((err,), "cudaEventQuery")
        return True

    def elapsed_ms(self, end: Event) -> float:
        """Milliseconds of GPU time from this event to `end` (both recorded and complete)."""
        return float(call("cudaEventElapsedTime", self.handle, end.handle))

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------- buffers


class _Buffer:
    """Shared life cycle of device and pinned host allocations."""

    _free_call = ""

    def __init__(self, nbytes: int, ptr: int) -> None:
        self.nbytes = int(nbytes)
        self._ptr = int(ptr)
        self._finalizer = weakref.finalize(self, _quiet, self._free_call, ptr)

    @property
    def ptr(self) -> int:
        if not self._finalizer.alive:
            raise RuntimeExecutionError(
                f"{type(self).__name__} was already freed; allocate a new one"
            )
        return self._ptr

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Free now (idempotent). Views made from the buffer must not be used afterwards."""
        self._finalizer()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_fits(self, nbytes: int, what: str) -> None:
        if nbytes > self.nbytes:
            raise RuntimeExecutionError(
                f"{what}: {nbytes} bytes do not fit in a {self.nbytes}-byte {type(self).__name__}; allocate a larger one"
            )


class DeviceBuffer(_Buffer):
    """`nbytes` of device memory from cudaMalloc (a 0-byte request still gets a valid pointer)."""

    _free_call = "cudaFree"

    def __init__(self, nbytes: int) -> None:
        if nbytes < 0:
            raise RuntimeExecutionError(f"DeviceBuffer: negative size {nbytes}")
        ptr = call("cudaMalloc", max(int(nbytes), 1))
        super().__init__(nbytes, int(ptr))

    def copy_from_host(
        self, src: np.ndarray | HostBuffer, *, stream: Stream | int | None = None
    ) -> None:
        """Host -> device. Async only when `src` is pinned (a HostBuffer view); keep it alive until synced."""
        ptr, nbytes = _host_pointer(src)
        self._check_fits(nbytes, "copy_from_host")
        call(
            "cudaMemcpyAsync",
            self.ptr,
            ptr,
            nbytes,
            _memcpy_kind("cudaMemcpyHostToDevice"),
            _stream_handle(stream),
        )

    def copy_to_host(
        self, dst: np.ndarray | HostBuffer, *, stream: Stream | int | None = None
    ) -> None:
        """Device -> host into `dst` (writable, C-contiguous); sync the stream before reading it."""
        ptr, nbytes = _host_pointer(dst, writable=True)
        self._check_fits(nbytes, "copy_to_host")
        call(
            "cudaMemcpyAsync",
            ptr,
            self.ptr,
            nbytes,
            _memcpy_kind("cudaMemcpyDeviceToHost"),
            _stream_handle(stream),
        )

    def copy_from_device(
        self,
        src: DeviceBuffer | int,
        nbytes: int | None = None,
        *,
        stream: Stream | int | None = None,
    ) -> None:
        """Device -> device from another buffer or a raw device pointer."""
        src_ptr = src.ptr if isinstance(src, DeviceBuffer) else int(src)
        count = self.nbytes if nbytes is None else int(nbytes)
        self._check_fits(count, "copy_from_device")
        if isinstance(src, DeviceBuffer) and count > src.nbytes:
            raise RuntimeExecutionError(
                f"copy_from_device: source holds {src.nbytes} bytes, asked for {count}"
            )
        call(
            "cudaMemcpyAsync",
            self.ptr,
            src_ptr,
            count,
            _memcpy_kind("cudaMemcpyDeviceToDevice"),
            _stream_handle(stream),
        )

    def memset(self, value: int, *, stream: Stream | int | None = None) -> None:
        call("cudaMemsetAsync", self.ptr, int(value), self.nbytes, _stream_handle(stream))

    def view(self, shape: tuple[int, ...], dtype: Any) -> DeviceView:
        """A typed, zero-copy `__cuda_array_interface__` view (torch.as_tensor / cupy.asarray accept it)."""
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        self._check_fits(nbytes, "view")
        return DeviceView(self.ptr, tuple(int(s) for s in shape), dt, owner=self)

    def to_host(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Blocking convenience: copy into a new numpy array."""
        out = np.empty(shape, dtype=dtype)
        self.copy_to_host(out)
        call("cudaStreamSynchronize", 0)
        return out

    def __repr__(self) -> str:
        state = "freed" if self.closed else f"0x{self._ptr:x}"
        return f"DeviceBuffer({self.nbytes} bytes, {state})"


class HostBuffer(_Buffer):
    """`nbytes` of page-locked (pinned) host memory from cudaHostAlloc: truly async copies, full bandwidth."""

    _free_call = "cudaFreeHost"

    def __init__(self, nbytes: int) -> None:
        if nbytes < 0:
            raise RuntimeExecutionError(f"HostBuffer: negative size {nbytes}")
        ptr = call("cudaHostAlloc", max(int(nbytes), 1), _HOST_ALLOC_DEFAULT)
        super().__init__(nbytes, int(ptr))

    def array(
        self, shape: tuple[int, ...] | int | None = None, dtype: Any = np.uint8
    ) -> np.ndarray:
        """A numpy view of the pinned memory; the view keeps the buffer alive (until `close()`)."""
        dt = np.dtype(dtype)
        if shape is None:
            shape = (self.nbytes // dt.itemsize,)
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        self._check_fits(nbytes, "array")
        return np.asarray(_HostArrayInterface(self, shape, dt))

    def __repr__(self) -> str:
        state = "freed" if self.closed else f"0x{self._ptr:x}"
        return f"HostBuffer({self.nbytes} bytes, {state})"


class _HostArrayInterface:
    """Carrier of `__array_interface__` whose lifetime pins the HostBuffer (numpy keeps it as .base)."""

    def __init__(self, owner: HostBuffer, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.owner = owner
        self.__array_interface__ = {
            "shape": shape,
            "typestr": dtype.str,
            "descr": dtype.descr,
            "data": (owner.ptr, False),
            "strides": None,
            "version": 3,
        }


def _host_pointer(arr: np.ndarray | HostBuffer, *, writable: bool = False) -> tuple[int, int]:
    if isinstance(arr, HostBuffer):
        return arr.ptr, arr.nbytes
    if not isinstance(arr, np.ndarray):
        raise RuntimeExecutionError(
            f"expected a numpy array or HostBuffer, got {type(arr).__name__}"
        )
    if not arr.flags.c_contiguous:
        raise RuntimeExecutionError(
            "host array is not C-contiguous; pass np.ascontiguousarray(arr)"
        )
    if writable and not arr.flags.writeable:
        raise RuntimeExecutionError("destination host array is read-only")
    return int(arr.ctypes.data), int(arr.nbytes)


def is_pinned(arr: np.ndarray) -> bool:
    """True when `arr`'s memory is page-locked (so cudaMemcpyAsync from it is really async)."""
    rt = _rt()
    try:
        attrs = call("cudaPointerGetAttributes", int(arr.ctypes.data))
    except CudaError:
        return False
    return attrs.type == rt.cudaMemoryType.cudaMemoryTypeHost


# ---------------------------------------------------------------------- zero-copy device views


@dataclass(frozen=True)
class DeviceView:
    """A C-contiguous typed device array we do not own: pointer, shape, dtype, and what keeps it alive.

    It exports `__cuda_array_interface__` itself, so cupy/torch/numba can read our buffers too.
    `stream` is the producer's stream (CAI v3) that consumers should order after, if any.
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    owner: Any = None
    stream: int | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.ptr, False),
            "strides": None,
            "version": 3,
            "stream": None,
        }

    def to_host(self, *, stream: Stream | int | None = None) -> np.ndarray:
        out = np.empty(self.shape, dtype=self.dtype)
        call(
            "cudaMemcpyAsync",
            int(out.ctypes.data),
            self.ptr,
            self.nbytes,
            _memcpy_kind("cudaMemcpyDeviceToHost"),
            _stream_handle(stream),
        )
        call("cudaStreamSynchronize", _stream_handle(stream))
        return out


def is_device_array(obj: Any) -> bool:
    """True for objects that live on the GPU: `__cuda_array_interface__`, or DLPack on a CUDA device."""
    if isinstance(obj, np.ndarray):
        return False
    if isinstance(obj, DeviceView):
        return True
    try:
        if hasattr(obj, "__cuda_array_interface__"):
            obj.__cuda_array_interface__  # noqa: B018 - torch raises for CPU tensors
            return True
    except (AttributeError, RuntimeError, TypeError, ValueError):
        pass
    if hasattr(obj, "__dlpack_device__"):
        try:
            device_type, _ = obj.__dlpack_device__()
        except Exception:
            return False
        return int(device_type) in (_DL_CUDA, _DL_CUDA_MANAGED)
    return False


def device_view(obj: Any) -> DeviceView:
    """Zero-copy view of a GPU array (torch, cupy, numba, anything with CAI or DLPack).

    Non-contiguous arrays are first made contiguous by their own library (`.contiguous()` for
    torch, `.copy()` for cupy): a device copy, never a failure.
    """
    if isinstance(obj, DeviceView):
        return obj
    cai = _cuda_array_interface(obj)
    if cai is None and hasattr(obj, "__dlpack__"):
        return _view_from_dlpack(obj)
    if cai is None:
        raise RuntimeExecutionError(
            f"{type(obj).__name__} is not a device array (no __cuda_array_interface__ or CUDA __dlpack__)"
        )
    dtype = np.dtype(cai["typestr"])
    shape = tuple(int(s) for s in cai["shape"])
    if not _is_c_contiguous(shape, cai.get("strides"), dtype.itemsize):
        contiguous = _make_contiguous(obj)
        return device_view(contiguous)
    ptr = int(cai["data"][0])
    stream = cai.get("stream")
    return DeviceView(
        ptr, shape, dtype, owner=obj, stream=int(stream) if stream is not None else None
    )


def _cuda_array_interface(obj: Any) -> dict[str, Any] | None:
    try:
        return obj.__cuda_array_interface__
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def _is_c_contiguous(shape: tuple[int, ...], strides: Any, itemsize: int) -> bool:
    if strides is None:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(tuple(strides)), strict=True):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


def _make_contiguous(obj: Any) -> Any:
    if hasattr(obj, "contiguous"):  # torch
        return obj.contiguous()
    if hasattr(obj, "copy"):  # cupy (order='C' by default), numba device arrays
        try:
            return obj.copy(order="C")
        except TypeError:
            return obj.copy()
    raise RuntimeExecutionError(
        f"non-contiguous {type(obj).__name__} and no way to make it contiguous; copy it first"
    )


# DLPack (https://dmlc.github.io/dlpack/latest/c_api.html): parsed with ctypes so no framework is needed.
_DL_CUDA, _DL_CUDA_MANAGED = 2, 13
_DL_INT, _DL_UINT, _DL_FLOAT, _DL_BOOL = 0, 1, 2, 6


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


def _dl_dtype(code: int, bits: int, lanes: int) -> np.dtype:
    kind = {_DL_INT: "i", _DL_UINT: "u", _DL_FLOAT: "f", _DL_BOOL: "b"}.get(code)
    if kind is None or lanes != 1:
        raise RuntimeExecutionError(
            f"DLPack dtype code={code} bits={bits} lanes={lanes} has no numpy equivalent"
        )
    return np.dtype(np.bool_) if kind == "b" else np.dtype(f"{kind}{bits // 8}")


def _view_from_dlpack(obj: Any) -> DeviceView:
    """Read a DLPack capsule without consuming it: the capsule (kept as owner) frees itself."""
    capsule = obj.__dlpack__()
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, b"dltensor")  # DLManagedTensor starts with its DLTensor
    tensor = _DLTensor.from_address(address)
    if tensor.device.device_type not in (_DL_CUDA, _DL_CUDA_MANAGED):
        raise RuntimeExecutionError(
            f"DLPack tensor is on device type {tensor.device.device_type}, not CUDA"
        )
    dtype = _dl_dtype(tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes)
    shape = tuple(int(tensor.shape[i]) for i in range(tensor.ndim))
    strides = None
    if tensor.strides:
        strides = tuple(int(tensor.strides[i]) * dtype.itemsize for i in range(tensor.ndim))
    if not _is_c_contiguous(shape, strides, dtype.itemsize):
        return device_view(_make_contiguous(obj))
    ptr = int(tensor.data or 0) + int(tensor.byte_offset)
    return DeviceView(ptr, shape, dtype, owner=(obj, capsule))


# ---------------------------------------------------------------------------------- graphs


class CudaGraph:
    """Work captured once from a stream and replayed with one launch (cudaGraphLaunch).

    Use: `with graph.capture(stream): <enqueue work on stream>` then `graph.launch(stream)`.
    Replays read and write the same addresses as the capture, so buffers must stay put.
    """

    def __init__(self) -> None:
        self._graph: Any = None
        self._exec: Any = None
        self._finalizer: weakref.finalize | None = None

    @property
    def ready(self) -> bool:
        return self._exec is not None

    @contextlib.contextmanager
    def capture(self, stream: Stream) -> Iterator[None]:
        self.close()
        rt = _rt()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        call("cudaStreamBeginCapture", stream.handle, mode)
        try:
            yield
        except BaseException:
            # end the capture so the stream is usable again; the partial graph is discarded
            with contextlib.suppress(Exception):
                graph = call("cudaStreamEndCapture", stream.handle)
                _quiet("cudaGraphDestroy", graph)
            raise
        graph = call("cudaStreamEndCapture", stream.handle)
        try:
            exec_ = call("cudaGraphInstantiate", graph, 0)
        except CudaError:
            _quiet("cudaGraphDestroy", graph)
            raise
        self._graph, self._exec = graph, exec_
        self._finalizer = weakref.finalize(self, _destroy_graph, graph, exec_)

    def launch(self, stream: Stream) -> None:
        if self._exec is None:
            raise RuntimeExecutionError("CudaGraph.launch before a successful capture")
        call("cudaGraphLaunch", self._exec, stream.handle)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._graph = self._exec = self._finalizer = None

    def __enter__(self) -> CudaGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _destroy_graph(graph: Any, exec_: Any) -> None:
    _quiet("cudaGraphExecDestroy", exec_)
    _quiet("cudaGraphDestroy", graph)
