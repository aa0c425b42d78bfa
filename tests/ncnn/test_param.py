"""The .param reader/writer and the .bin walker on hand-made files (no ncnn needed)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from onnx2trt_lib.ncnn.param import (
    TAG_FP16,
    TAG_FP32,
    NcnnFormatError,
    read_floats,
    read_param,
    walk_bin,
)
from onnx2trt_lib.ncnn.table import parse_table

PARAM = """7767517
4 4
Input                    in0                      0 1 in0
Convolution              conv_0                   1 1 in0 1 0=2 1=1 5=1 6=6
BatchNorm                bn_0                     1 1 1 2 0=2
InnerProduct             fc_0                     1 1 2 out0 0=3 1=0 2=3
"""


def _bin(conv_tag=TAG_FP32) -> bytes:
    w = np.arange(6, dtype=np.float32)
    if conv_tag == TAG_FP16:
        conv = struct.pack("<I", TAG_FP16) + w.astype("<f2").tobytes() + b"\0" * 0
    else:
        conv = struct.pack("<I", TAG_FP32) + w.tobytes()
    bias = np.ones(2, np.float32).tobytes()
    bn = np.zeros(8, np.float32).tobytes()
    fc = struct.pack("<I", TAG_FP32) + np.full(3, 2.0, np.float32).tobytes()
    return conv + bias + bn + fc


def test_round_trip_and_walk(tmp_path):
    (tmp_path / "m.param").write_text(PARAM)
    param = read_param(tmp_path / "m.param")
    assert param.text() == PARAM
    for tag in (TAG_FP32, TAG_FP16):
        blob = _bin(tag)
        segs = walk_bin(param, blob)
        assert [len(segs[n]) for n in ("in0", "conv_0", "bn_0", "fc_0")] == [0, 2, 4, 1]
        assert read_floats(blob, segs["conv_0"][0]).tolist() == [0, 1, 2, 3, 4, 5]
        assert read_floats(blob, segs["fc_0"][0]).tolist() == [2, 2, 2]


def test_walk_refuses_unknown_layouts(tmp_path):
    (tmp_path / "m.param").write_text(PARAM)
    param = read_param(tmp_path / "m.param")
    with pytest.raises(NcnnFormatError, match="account for"):
        walk_bin(param, _bin() + b"\0\0\0\0")
    (tmp_path / "u.param").write_text(PARAM.replace("BatchNorm ", "FancyNorm "))
    with pytest.raises(NcnnFormatError, match="bn_0 \\(FancyNorm\\)"):
        walk_bin(read_param(tmp_path / "u.param"), _bin())


def test_not_a_param(tmp_path):
    (tmp_path / "x.param").write_text("hello\n")
    with pytest.raises(NcnnFormatError, match="not an ncnn .param"):
        read_param(tmp_path / "x.param")


def test_table_parse_and_print():
    text = "conv_0_param_0 12.500000 3.000000 \nconv_0 0.00012345679 \n"
    table = parse_table(text)
    assert table.weights["conv_0"].tolist() == [12.5, 3.0]
    assert table.inputs["conv_0"] == pytest.approx(1.2345679e-4)
    assert table.text() == text  # %f for scales >= 1, 9 digits below 1 (a %f 0.000123 loses them)
    with pytest.raises(Exception, match="line 1"):
        parse_table("conv_0 abc\n")


def test_ir_version_capped_for_pnnx(tmp_path):
    """onnx >= 1.23 writes IR 14, which pnnx's embedded ONNX Runtime refuses; the copy pnnx
    reads says 13 (the graph is unchanged)."""
    import onnx
    from onnx import TensorProto, helper

    from onnx2trt_lib.ncnn.convert import PNNX_MAX_IR_VERSION, pnnx_copy

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    )
    model.ir_version = 14
    onnx.save(model, tmp_path / "m.onnx")
    pnnx_copy(tmp_path / "m.onnx", tmp_path / "c.onnx")
    capped = onnx.load(tmp_path / "c.onnx")
    assert capped.ir_version == PNNX_MAX_IR_VERSION
    assert capped.graph == model.graph
    model.ir_version = 9
    onnx.save(model, tmp_path / "old.onnx")
    pnnx_copy(tmp_path / "old.onnx", tmp_path / "c9.onnx")
    assert onnx.load(tmp_path / "c9.onnx").ir_version == 9
