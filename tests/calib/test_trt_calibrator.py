"""The IInt8EntropyCalibrator2 path: batching/device-buffer logic without TensorRT; CUDA on a GPU."""

from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from onnx2trt_lib.calib.cache import CalibrationCache
from onnx2trt_lib.calib.trt_calibrator import BatchFeeder, CudartMemory, entropy_calibrator
from onnx2trt_lib.errors import CacheFormatError, CalibrationError


class HostMemory:
    """DeviceMemory on the host: malloc'd ctypes buffers, so pointers can be read back."""

    def __init__(self):
        self.live: dict[int, ctypes.Array] = {}
        self.mallocs = 0

    def malloc(self, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        self.live[ctypes.addressof(buf)] = buf
        self.mallocs += 1
        return ctypes.addressof(buf)

    def copy_htod(self, pointer, array):
        assert array.flags.c_contiguous and array.nbytes <= len(self.live[pointer])
        ctypes.memmove(pointer, array.ctypes.data, array.nbytes)

    def free(self, pointer):
        del self.live[pointer]

    def read(self, pointer, like):
        return np.frombuffer(ctypes.string_at(pointer, like.nbytes), dtype=like.dtype).reshape(
            like.shape
        )


def _batches(n, batch=2):
    rng = np.random.default_rng(0)
    return [
        {
            "a": rng.standard_normal((batch, 3, 4)).astype(np.float32),
            "b": rng.integers(0, 9, (batch, 5)).astype(np.int32),
        }
        for _ in range(n)
    ]


def test_feeder_uploads_each_batch_in_the_order_asked():
    data, memory = _batches(3), HostMemory()
    feeder = BatchFeeder(data, batch_size=2, memory=memory)
    for expected in data:
        pointers = feeder.next_pointers(["b", "a"])
        np.testing.assert_array_equal(memory.read(pointers[0], expected["b"]), expected["b"])
        np.testing.assert_array_equal(memory.read(pointers[1], expected["a"]), expected["a"])
    assert feeder.next_pointers(["a", "b"]) is None
    assert memory.mallocs == 2  # buffers reused across batches
    feeder.reset()
    assert feeder.next_pointers(["a"]) is not None  # a list rewinds
    feeder.free()
    assert memory.live == {}


def test_feeder_grows_buffers_casts_and_checks():
    memory = HostMemory()
    small, large = np.ones((2, 2), np.float64), np.arange(2 * 8, dtype=np.float64).reshape(2, 8)
    with BatchFeeder(
        [{"a": small}, {"a": large[:, ::2]}, {"a": large}],
        batch_size=2,
        memory=memory,
        dtypes={"a": np.dtype(np.float32)},
    ) as feeder:
        for arr in (small, large[:, ::2], large):
            (pointer,) = feeder.next_pointers(["a"])
            np.testing.assert_array_equal(
                memory.read(pointer, arr.astype(np.float32)), arr.astype(np.float32)
            )
        assert memory.mallocs == 3 and len(memory.live) == 1  # grew twice, old buffers freed
    assert memory.live == {}
    with pytest.raises(CalibrationError, match="batch size is 4"):
        BatchFeeder(_batches(1), batch_size=4, memory=HostMemory()).next_pointers(["a"])
    with pytest.raises(CalibrationError, match="no array for input 'z'"):
        BatchFeeder(_batches(1), batch_size=2, memory=HostMemory()).next_pointers(["z"])


class FakeBase:
    """Stands in for trt.IInt8EntropyCalibrator2: records that __init__ ran."""

    def __init__(self):
        self.base_initialised = True


def test_calibrator_class_serves_our_cache_and_feeds_batches(tmp_path):
    fake_trt = types.SimpleNamespace(IInt8EntropyCalibrator2=FakeBase)
    cache = CalibrationCache.from_amax({"x": 2.0, "y": 6.0}, version="8.6.1")
    memory = HostMemory()
    calibrator = entropy_calibrator(
        _batches(2),
        batch_size=2,
        cache=cache,
        memory=memory,
        trt_module=fake_trt,
        write_to=tmp_path / "written.cache",
    )
    assert isinstance(calibrator, FakeBase) and calibrator.base_initialised
    assert calibrator.read_calibration_cache() == cache.to_bytes()
    assert calibrator.get_batch_size() == 2
    assert len(calibrator.get_batch(["a", "b"])) == 2
    assert calibrator.get_batch(["a", "b"]) is not None
    assert calibrator.get_batch(["a", "b"]) is None and memory.live == {}  # freed at the end
    assert (
        calibrator.get_batch(["nope"]) is None
    )  # errors end the data (TensorRT swallows exceptions)
    calibrator.write_calibration_cache(memoryview(b"TRT-8601-EntropyCalibration2\nx: 3c010204\n"))
    assert (tmp_path / "written.cache").read_bytes().startswith(b"TRT-8601")
    # from a file path; a garbage cache is refused up front
    (tmp_path / "c.cache").write_bytes(cache.to_bytes())
    assert (
        entropy_calibrator(cache=tmp_path / "c.cache", trt_module=fake_trt).read_calibration_cache()
        == cache.to_bytes()
    )
    assert (
        entropy_calibrator(
            cache=tmp_path / "new.cache", trt_module=fake_trt
        ).read_calibration_cache()
        is None
    )
    with pytest.raises(CacheFormatError):
        entropy_calibrator(cache=b"junk", trt_module=fake_trt)


def test_tensorrt_is_not_imported_at_module_import():
    import subprocess
    import sys

    code = (
        "import sys, onnx2trt_lib.calib.trt_calibrator, onnx2trt_lib.calib.api; "
        "print(any(m.split('.')[0] in ('tensorrt', 'tensorrt_rtx', 'cuda') for m in sys.modules))"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


@pytest.mark.gpu
def test_cudart_device_buffers_round_trip():
    from onnx2trt_lib._optional import cudart

    rt = cudart()
    data = _batches(2)
    memory = CudartMemory()
    with BatchFeeder(data, batch_size=2, memory=memory) as feeder:
        for batch in data:
            (pointer,) = feeder.next_pointers(["a"])
            back = np.empty_like(batch["a"])
            (err,) = rt.cudaMemcpy(
                back.ctypes.data, pointer, back.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            )
            assert int(err) == 0
            np.testing.assert_array_equal(back, batch["a"])
