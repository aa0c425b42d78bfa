"""Suite-wide: markers `gpu` and `trt` skip with a reason when their hardware/library is absent."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@functools.cache
def _gpu_reason() -> str | None:
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415
    except ImportError:
        try:
            from cuda import cudart  # type: ignore  # noqa: PLC0415
        except ImportError:
            return "cuda-python is not installed"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # driver library missing
        return f"no CUDA driver ({type(exc).__name__})"
    if int(err) != 0 or count == 0:
        return "no CUDA GPU on this machine"
    return None


@functools.cache
def _trt_reason() -> str | None:
    for module in ("tensorrt_rtx", "tensorrt"):
        try:
            __import__(module)
            return None
        except Exception:
            continue
    return "neither tensorrt nor tensorrt_rtx is installed"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("gpu") and (reason := _gpu_reason()):
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))
        if item.get_closest_marker("trt") and (reason := _trt_reason()):
            item.add_marker(pytest.mark.skip(reason=f"trt test: {reason}"))


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the checkout (seed notes, real caches); tests using it skip when absent."""
    override = os.environ.get("ONNX2TRT_SHARED")
    path = Path(override) if override else SHARED
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path
