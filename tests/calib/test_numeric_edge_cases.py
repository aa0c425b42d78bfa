"""Numeric edge cases found in review: each was a traceback, a silent inconsistency or a zero scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnx2trt_lib.calib import ZERO_AMAX, Histogram
from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.cache import CalibrationCache, parse_cache, read_cache
from onnx2trt_lib.calib.state import CalibrationState
from onnx2trt_lib.errors import CacheFormatError, CalibrationError


def relu_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "patch",
    [
        {"count": float("inf")},
        {"num_bins": float("inf")},
        {"counts": [2**70] + [0] * 15},
        {"num_bins": 10**13},
        {"top": 5},
    ],
    ids=[
        "infinite-count",
        "infinite-bins",
        "huge-count",
        "huge-bins-few-counts",
        "top-beyond-last-bin",
    ],
)
def test_corrupt_states_are_refused_in_one_line(tmp_path, patch):
    hist = Histogram(16)
    hist.update(np.array([1.0, 0.5]))
    good = tmp_path / "good.json"
    CalibrationState({"t": hist}).save(good)
    document = json.loads(good.read_text())
    document["tensors"]["t"].update(patch)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    with pytest.raises(CalibrationError) as info:
        CalibrationState.load(bad)
    assert "\n" not in str(info.value)


def test_scales_that_round_to_zero_in_float32_are_written_as_zero_tensors(tmp_path):
    data = {
        "x": np.array([[1e-44, 5e-45, 0.0, 1e-45]], np.float32)
    }  # max |x| / 127 rounds to 0 in float32
    result = calibrate(relu_model(), data, output=tmp_path / "tiny.cache")
    scales = read_cache(tmp_path / "tiny.cache").scales
    assert (
        all(s > 0 for s in scales.values())
        and result.amax["x"] == ZERO_AMAX
        and "x" in result.zero_range
    )


def test_cache_values_beyond_float32_and_foreign_digits_are_one_line_errors():
    with pytest.raises(CalibrationError, match="beyond float32"):
        CalibrationCache.from_amax({"t": 1e41})
    with pytest.raises(CacheFormatError, match="header"):
        parse_cache("TRT-\u0668\u0660\u0660\u0661-EntropyCalibration2\nt: 3c010204\n".encode())


def test_float64_range_too_small_for_the_bins_is_refused():
    hist = Histogram(2048)
    with pytest.raises(CalibrationError, match="too small"):
        hist.update(np.array([0.0, 1e-306, 5e-307], np.float64))
    fine = Histogram(2048)
    fine.update(
        np.array([0.0, 1e-300, 5e-301], np.float64)
    )  # a normal bin width still bins exactly
    assert fine.counts[0] == 1 and fine.counts[2047] == 1 and fine.counts[1000:1030].sum() == 1
