"""Table-free INT8 Gemm (`write_int8(..., gemm=True)`, ncnn2int8's `quantize_gemm`): int8
weights with one scale, activations quantized per row by ncnn at run time. Checked in the ncnn
runtime against the FP32 Gemm on a hand-made model shaped like PP-OCRv4 rec's neck."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from onnx2trt_lib.ncnn.int8 import gemm_int8_layers, write_int8
from onnx2trt_lib.ncnn.param import TAG_INT8, read_param, walk_bin
from onnx2trt_lib.ncnn.table import NcnnTable

M, N, K = 40, 96, 120  # rows (sequence), outputs, inputs


def test_gemm_int8_close_to_fp32_in_ncnn(tmp_path):
    from onnx2trt_lib import _optional

    if not _optional.available("ncnn"):
        pytest.skip("ncnn is not installed (pip install 'onnx2trt_lib[ncnn]')")
    from onnx2trt_lib.ncnn.runtime import load_net, run

    text = (
        "7767517\n2 2\n"
        f"Input in0 0 1 in0 0={K} 1={M}\n"
        f"Gemm g 1 1 in0 out0 10=4 2=0 3=1 4=0 5=1 6=1 7={M} 8={N} 9={K}\n"
    )
    rng = np.random.default_rng(0)
    b = rng.normal(0, 1 / np.sqrt(K), (N, K)).astype(np.float32)  # transposed: N rows of K
    c = rng.normal(0, 0.1, N).astype(np.float32)
    blob = struct.pack("<I", 0) + b.tobytes() + struct.pack("<I", 0) + c.tobytes()
    (tmp_path / "f.param").write_text(text)
    (tmp_path / "f.bin").write_bytes(blob)
    param = read_param(tmp_path / "f.param")
    assert gemm_int8_layers(param) == {"g"}
    segs = walk_bin(param, blob)
    q_text, q_bin, quantized = write_int8(param, blob, segs, NcnnTable(), gemm=True)
    assert quantized == []  # no table layers
    (tmp_path / "q.param").write_text(q_text)
    (tmp_path / "q.bin").write_bytes(q_bin)
    q_param = read_param(tmp_path / "q.param")
    assert q_param.layer("g").get(18) == 2
    q_segs = walk_bin(q_param, q_bin)["g"]  # int8 B, C, B's scale: the reader walks it
    assert q_segs[0].tag == TAG_INT8 and len(q_segs) == 3
    scale = np.frombuffer(q_bin, "<f4", 1, q_segs[2].offset)[0]
    assert scale == pytest.approx(127 / np.abs(b).max(), rel=1e-6)
    assert gemm_int8_layers(q_param) == set()  # written once
    plain, _, _ = write_int8(param, blob, segs, NcnnTable())
    assert plain == param.text()  # off by default
    fp32 = load_net(tmp_path / "f.param", tmp_path / "f.bin")
    int8 = load_net(tmp_path / "q.param", tmp_path / "q.bin", int8=True)
    for seed in range(3):
        x = np.random.default_rng(seed + 1).normal(size=(M, K)).astype(np.float32)
        ref = run(fp32, {"in0": x}, ["out0"])["out0"]
        got = run(int8, {"in0": x}, ["out0"])["out0"]
        np.testing.assert_allclose(ref, x @ b.T + c, rtol=1e-4, atol=1e-4)
        assert not np.array_equal(got, ref)  # really computed in INT8
        sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((got - ref) ** 2))
        assert sqnr > 30, sqnr  # 8-bit weights and per-row 8-bit activations
