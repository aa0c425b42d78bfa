"""The TensorRT <= 10 implicit-INT8 path: an IInt8EntropyCalibrator2 that serves OUR cache.

TensorRT calls `read_calibration_cache()` first; when it returns a cache whose header
matches, TensorRT takes the scales from it and never runs its own calibration. So given
the cache `calibrate()` wrote, the calibrator hands it over and TensorRT uses our KL
results. Without a cache it feeds batches through device buffers like any calibrator.

The class is built inside `entropy_calibrator()` at call time (tensorrt is never imported
at module import: the idea of polygraphy's backend/trt/calibrator.py). Batching and
device buffers live in the plain `BatchFeeder`, testable without TensorRT or a GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._io import read_bytes_limited, write_bytes_atomic
from ..errors import CacheFormatError, CalibrationError, RuntimeExecutionError
from .cache import MAX_CACHE_BYTES, CalibrationCache, parse_cache

log = logging.getLogger(__name__)


class DeviceMemory(Protocol):
    """The three device operations the feeder needs (cuda-python by default)."""

    def malloc(self, nbytes: int) -> int: ...

    def copy_htod(self, pointer: int, array: np.ndarray) -> None: ...

    def free(self, pointer: int) -> None: ...


class CudartMemory:
    """DeviceMemory through cuda-python's runtime API (cudaMalloc / cudaMemcpy / cudaFree)."""

    def __init__(self) -> None:
        from .._optional import cudart

        self._rt = cudart()

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeExecutionError(
                f"CUDA {what} failed with error {int(err)} ({err}); is a GPU visible?"
            )
        return rest[0] if rest else None

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(max(1, nbytes)), f"cudaMalloc({nbytes})"))

    def copy_htod(self, pointer: int, array: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self._rt.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, kind),
            "cudaMemcpy host->device",
        )

    def free(self, pointer: int) -> None:
        self._check(self._rt.cudaFree(pointer), "cudaFree")


class BatchFeeder:
    """Turns {input: ndarray} batches into device pointers in the order TensorRT asks for names.

    One device buffer per input, allocated on first use and grown if a later batch is larger;
    `free()` (or the context manager) releases them. `reset()` rewinds a re-readable source.
    """

    def __init__(
        self,
        batches: Iterable[Mapping[str, np.ndarray]],
        *,
        batch_size: int,
        memory: DeviceMemory | None = None,
        dtypes: Mapping[str, np.dtype] | None = None,
    ) -> None:
        if batch_size <= 0:
            raise CalibrationError(f"calibration batch size {batch_size} must be positive")
        self.batch_size = batch_size
        self._batches = batches
        self._memory = memory
        self._dtypes = dict(dtypes or {})
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, capacity in bytes)
        self._iter: Iterator[Mapping[str, np.ndarray]] | None = None
        self.batches_served = 0

    @property
    def memory(self) -> DeviceMemory:
        if self._memory is None:
            self._memory = CudartMemory()
        return self._memory

    def reset(self) -> None:
        self._iter = None
        self.batches_served = 0

    def next_pointers(self, names: Sequence[str]) -> list[int] | None:
        """Device pointers for the next batch, or None when the data is exhausted."""
        if self._iter is None:
            self._iter = iter(self._batches)
        try:
            batch = next(self._iter)
        except StopIteration:
            if not self.batches_served:
                log.warning("calibration data gave no batches")
            return None
        pointers = []
        for name in names:
            if name not in batch:
                raise CalibrationError(
                    f"calibration batch {self.batches_served} has no array for input {name!r}"
                )
            array = np.asarray(batch[name])
            if name in self._dtypes and array.dtype != self._dtypes[name]:
                array = array.astype(self._dtypes[name])
            array = np.ascontiguousarray(array)
            if array.ndim and array.shape[0] != self.batch_size:
                raise CalibrationError(
                    f"calibration batch {self.batches_served}: input {name!r} has {array.shape[0]} samples, "
                    f"the calibrator's batch size is {self.batch_size}"
                )
            pointers.append(self._upload(name, array))
        self.batches_served += 1
        return pointers

    def _upload(self, name: str, array: np.ndarray) -> int:
        pointer, capacity = self._buffers.get(name, (0, 0))
        if array.nbytes > capacity:
            if pointer:
                self.memory.free(pointer)
            pointer, capacity = self.memory.malloc(array.nbytes), array.nbytes
            self._buffers[name] = (pointer, capacity)
        self.memory.copy_htod(pointer, array)
        return pointer

    def free(self) -> None:
        buffers, self._buffers = self._buffers, {}
        for pointer, _ in buffers.values():
            self.memory.free(pointer)

    def __enter__(self) -> BatchFeeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


def _cache_bytes(cache: bytes | str | os.PathLike | CalibrationCache | None) -> bytes | None:
    if cache is None:
        return None
    if isinstance(cache, CalibrationCache):
        return cache.to_bytes()
    if isinstance(cache, bytes):
        parse_cache(cache)  # refuse garbage now rather than let TensorRT ignore it silently
        return cache
    path = Path(cache)
    if not path.is_file():
        return None  # a cache path to be written by this calibration
    data = read_bytes_limited(
        path, limit=MAX_CACHE_BYTES, what="calibration cache", error=CacheFormatError
    )
    parse_cache(data, source=str(path))
    return data


def entropy_calibrator(
    batches: Iterable[Mapping[str, np.ndarray]] | None = None,
    *,
    batch_size: int = 1,
    cache: bytes | str | os.PathLike | CalibrationCache | None = None,
    write_to: str | os.PathLike | None = None,
    memory: DeviceMemory | None = None,
    trt_module: Any = None,
) -> Any:
    """An `IInt8EntropyCalibrator2` instance for `config.int8_calibrator`.

    `cache` (bytes, a path, or a CalibrationCache) is returned from
    `read_calibration_cache`, so TensorRT uses those scales. `write_to` saves what TensorRT
    writes back. `trt_module` defaults to `tensorrt` (imported now, not at module import).
    """
    if trt_module is None:
        from .._optional import tensorrt

        trt_module = tensorrt()
    base = trt_module.IInt8EntropyCalibrator2
    contents = _cache_bytes(cache)
    feeder = BatchFeeder(
        batches if batches is not None else (), batch_size=batch_size, memory=memory
    )

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        """Serves onnx2trt's cache to TensorRT, or feeds batches when there is none."""

        def __init__(self) -> None:
            base.__init__(self)
            self.feeder = feeder
            self.cache_contents = contents

        def get_batch_size(self) -> int:
            return self.feeder.batch_size

        def get_batch(self, names: Sequence[str], *_: Any) -> list[int] | None:
            # TensorRT swallows exceptions raised here; log them and end the data instead.
            try:
                pointers = self.feeder.next_pointers(list(names))
            except Exception:
                log.exception("calibration batch failed; ending calibration data")
                pointers = None
            if pointers is None:
                self.feeder.free()
            return pointers

        def read_calibration_cache(self) -> bytes | None:
            return self.cache_contents

        def write_calibration_cache(self, cache: Any) -> None:
            data = bytes(cache) if not hasattr(cache, "tobytes") else cache.tobytes()
            self.cache_contents = data
            if write_to is not None:
                write_bytes_atomic(write_to, data)

        def free(self) -> None:
            self.feeder.free()

    return EntropyCalibrator()
