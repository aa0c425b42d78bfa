"""Is there an NVIDIA GPU to run an engine on? Asked of the driver library itself (ctypes).

Without a driver, TensorRT and the CUDA runtime fail with "CUDA driver version is insufficient
for CUDA runtime version" (cudaErrorInsufficientDriver, the code the runtime returns when no
driver is loaded), which sends users looking for a driver update on a machine with no GPU.
`no_gpu_reason()` says what is missing in one line instead. It loads only `libcuda`
(the driver API: cuInit, cuDeviceGetCount), never cuda-python, TensorRT or numpy.
"""

from __future__ import annotations

import ctypes
import functools
import sys

NO_GPU = "no NVIDIA GPU/driver found"
_DRIVER_LIBS = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")


@functools.cache
def no_gpu_reason() -> str | None:
    """None when the driver loads and sees a device, else a one-line reason starting with NO_GPU."""
    driver = None
    for name in _DRIVER_LIBS:
        try:
            driver = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if driver is None:
        return f"{NO_GPU} (the NVIDIA driver library {_DRIVER_LIBS[0]} is not installed)"
    try:
        status = driver.cuInit(0)
        if status != 0:  # 100 = CUDA_ERROR_NO_DEVICE
            return f"{NO_GPU} (the driver reports error {status} at cuInit; no usable device)"
        count = ctypes.c_int(0)
        if driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
            return f"{NO_GPU} (the driver sees no device)"
    except (AttributeError, OSError) as exc:
        return f"{NO_GPU} (the driver library does not answer: {exc})"
    return None


def gpu_message(action: str) -> str | None:
    """`"<action> needs an NVIDIA GPU: no NVIDIA GPU/driver found (...)"`, or None with a GPU."""
    reason = no_gpu_reason()
    return None if reason is None else f"{action} needs an NVIDIA GPU: {reason}"
