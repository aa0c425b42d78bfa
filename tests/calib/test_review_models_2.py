"""Regression tests from a review of calibration on unusual model shapes."""

from __future__ import annotations

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnx2trt_lib.calib import reference
from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.cache import read_cache
from onnx2trt_lib.calib.methods import ZERO_AMAX
from onnx2trt_lib.cli.main import cli


def _save(graph: onnx.GraphProto, path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _shared_batch_model(tmp_path) -> str:
    """Two inputs sharing the symbolic dims N, H, W."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Relu", ["s"], ["r"])],
        "g",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3, "H", "W"])
            for n in ("x", "y")
        ],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    return _save(graph, tmp_path / "shared.onnx")


def test_shape_of_one_input_sets_the_batch_of_the_others(tmp_path):
    # --shape x:2x3x5x6 alone: y (same symbolic N) used to be checked against a batch of 1 while
    # the arrays were sliced 2 samples at a time -> "input 'y' is 2x3x5x6 but the model wants 1x3x5x6"
    model = _shared_batch_model(tmp_path)
    rng = np.random.default_rng(1)
    data = {
        "x": rng.standard_normal((4, 3, 5, 6)).astype(np.float32),
        "y": rng.standard_normal((4, 3, 5, 6)).astype(np.float32),
    }
    result = calibrate(model, data, shapes={"x": (2, 3, 5, 6)}, mode="two-pass")
    assert result.num_batches == 2 and list(result.amax) == ["x", "y", "s", "r"]
    width = 2.0 ** np.ceil(np.log2(np.abs(data["y"]).max())) / 2048  # power-of-two range
    hist = reference.histogram(data["y"], width, 2048)
    assert result.amax["y"] == reference.entropy_threshold(hist, width)[0]

    np.savez(tmp_path / "d.npz", **data)
    out = tmp_path / "c.cache"
    run = CliRunner().invoke(
        cli,
        [
            "calibrate",
            model,
            "--data",
            str(tmp_path / "d.npz"),
            "-o",
            str(out),
            "--shape",
            "x:2x3x5x6",
            "-q",
        ],
    )
    assert run.exit_code == 0, run.output
    assert list(read_cache(out).bits) == ["x", "y", "s", "r"]


def test_zero_size_intermediate_does_not_fail_calibration(tmp_path):
    # an empty Slice (a dim of 0) used to abort with "tensor 'z': cannot compute an amax: no data was added"
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Slice", ["r", "st", "en", "ax"], ["z"]),
            helper.make_node("Neg", ["z"], ["zn"]),
            helper.make_node("Neg", ["r"], ["rn"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [
            helper.make_tensor_value_info("zn", TensorProto.FLOAT, ["N", 0]),
            helper.make_tensor_value_info("rn", TensorProto.FLOAT, ["N", 8]),
        ],
        [
            helper.make_tensor("st", TensorProto.INT64, [1], [3]),
            helper.make_tensor("en", TensorProto.INT64, [1], [3]),
            helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
        ],
    )
    model = _save(graph, tmp_path / "zero.onnx")
    data = {"x": np.random.default_rng(2).standard_normal((6, 8)).astype(np.float32)}
    for mode in ("two-pass", "single-pass"):
        result = calibrate(model, data, batch_size=2, mode=mode, output=tmp_path / f"{mode}.cache")
        assert list(result.amax) == ["x", "r", "z", "zn", "rn"]
        assert result.amax["z"] == result.amax["zn"] == ZERO_AMAX
        assert {"z", "zn"} <= set(result.zero_range)
        assert abs(read_cache(tmp_path / f"{mode}.cache").amax["z"] - ZERO_AMAX) < 1e-6
