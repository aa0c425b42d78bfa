"""Fixtures for quantization tests: the numpy-trained digits CNN, its ranges and a cache file."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits_cnn  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """(float model, data split); trained once per session (a few seconds)."""
    pytest.importorskip("sklearn")
    blob, data = digits_cnn.trained()
    return onnx.load_from_string(blob), data


@pytest.fixture(scope="session")
def digits_ranges(digits):
    model, data = digits
    return digits_cnn.max_abs_ranges(model, data["x_calib"])


@pytest.fixture
def digits_cache(digits_ranges, tmp_path):
    """The ranges written as a TensorRT calibration cache file."""
    from onnx2trt_lib.calib.cache import CalibrationCache, write_cache

    path = tmp_path / "digits.cache"
    write_cache(path, CalibrationCache.from_amax(digits_ranges, version="10.3.0"))
    return path
