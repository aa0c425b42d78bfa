"""Bias correction against a plain numpy forward pass: each layer's new bias is its old bias minus
the mean over the data of (W_q - W) x, with x the layer's FP32 input and W_q insert-qdq's
per-channel INT8 weights (round half to even)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.quant.bias_correction import CorrectBias

pytest.importorskip("onnxruntime")


def np_conv(x, w, b, stride, pad, group):
    """Plain NCHW convolution (float64), symmetric pads, dilation 1."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = xp.shape
    o, cg, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    og = o // group
    out = np.zeros((n, o, ho, wo))
    for g in range(group):
        for i in range(kh):
            for j in range(kw):
                patch = xp[
                    :,
                    g * cg : (g + 1) * cg,
                    i : i + stride * ho : stride,
                    j : j + stride * wo : stride,
                ]
                out[:, g * og : (g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, w[g * og : (g + 1) * og, :, i, j]
                )
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


def int8_weights(w, axis):
    """Symmetric per-channel INT8 as a Q/DQ pair gives it back: scale = max|w| / 127."""
    moved = np.moveaxis(w.astype(np.float64), axis, 0)
    amax = np.abs(moved).reshape(len(moved), -1).max(1)
    scale = np.where(amax > 0, amax / 127, 1.0).astype(np.float32).astype(np.float64)
    q = np.clip(np.round(moved / scale.reshape((-1,) + (1,) * (moved.ndim - 1))), -127, 127)
    return np.moveaxis(q * scale.reshape((-1,) + (1,) * (moved.ndim - 1)), 0, axis)


def _model(rng, c, c1, group, stride, trans_b):
    """x -> Conv(b1) -> Relu -> Conv(no bias) -> Relu -> GAP -> Flatten -> Gemm(C) -> Relu -> MatMul."""
    c1 = c1 * group
    c = c * group
    w1 = rng.standard_normal((c1, c // group, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(c1).astype(np.float32)
    w2 = rng.standard_normal((5, c1, 1, 1)).astype(np.float32)
    w3 = rng.standard_normal((4, 5) if trans_b else (5, 4)).astype(np.float32)
    c3 = rng.standard_normal(4).astype(np.float32)
    w4 = rng.standard_normal((4, 3)).astype(np.float32)
    arrays = {"w1": w1, "b1": b1, "w2": w2, "w3": w3, "c3": c3, "w4": w4}
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w1", "b1"],
            ["y1"],
            name="conv1",
            group=group,
            strides=[stride] * 2,
            pads=[1] * 4,
        ),
        helper.make_node("Relu", ["y1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y2"], name="conv2"),
        helper.make_node("Relu", ["y2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "c3"], ["y3"], name="gemm", transB=int(trans_b)),
        helper.make_node("Relu", ["y3"], ["r3"]),
        helper.make_node("MatMul", ["r3", "w4"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), arrays


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    c=st.integers(1, 3),
    c1=st.integers(1, 4),
    group=st.sampled_from([1, 2]),
    stride=st.sampled_from([1, 2]),
    trans_b=st.booleans(),
)
def test_corrected_biases_match_a_numpy_forward_pass(seed, c, c1, group, stride, trans_b):
    rng = np.random.default_rng(seed)
    model, a = _model(rng, c, c1, group, stride, trans_b)
    feeds = [
        {"x": (rng.standard_normal((n, c * group, 7, 7)) + 0.5).astype(np.float32)} for n in (2, 3)
    ]
    out, res = CorrectBias().run(model, feeds)
    x = np.concatenate([f["x"] for f in feeds]).astype(np.float64)
    w = {k: v.astype(np.float64) for k, v in a.items()}
    y1 = np_conv(x, w["w1"], w["b1"], stride, 1, group)
    r1 = np.maximum(y1, 0)
    r2 = np.maximum(np_conv(r1, w["w2"], None, 1, 0, 1), 0)
    f = r2.mean(axis=(2, 3))
    w3 = w["w3"].T if trans_b else w["w3"]  # [5, 4]
    r3 = np.maximum(f @ w3 + w["c3"], 0)
    dw1 = int8_weights(w["w1"], 0) - w["w1"]
    dw2 = int8_weights(w["w2"], 0) - w["w2"]
    dw3 = int8_weights(w3, 1) - w3
    dw4 = int8_weights(w["w4"], 1) - w["w4"]
    expect = {
        "conv1": w["b1"] - np_conv(x, dw1, None, stride, 1, group).mean(axis=(0, 2, 3)),
        "conv2": -np_conv(r1, dw2, None, 1, 0, 1).mean(axis=(0, 2, 3)),
        "gemm": w["c3"] - (f @ dw3).mean(0),
        "matmul": -(r3 @ dw4).mean(0),
    }
    # a layer whose inputs are all zero (a dead Relu) has nothing to correct and keeps no new bias
    zero_shift = {
        k for k, b in expect.items() if np.all(b == {"conv1": w["b1"], "gemm": w["c3"]}.get(k, 0))
    }
    assert res.counts["corrected"] == 4 - len(zero_shift)
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    nodes = {n.name: n for n in out.graph.node}
    got = {
        "conv1": inits[nodes["conv1"].input[2]],
        "conv2": inits[nodes["conv2"].input[2]] if "conv2" not in zero_shift else expect["conv2"],
        "gemm": inits[nodes["gemm"].input[2]],
        "matmul": inits[nodes["matmul_bias_correction"].input[1]]
        if "matmul" not in zero_shift
        else expect["matmul"],
    }
    for k in expect:
        np.testing.assert_allclose(got[k], expect[k], rtol=1e-4, atol=1e-6, err_msg=k)
    onnx.checker.check_model(out)


def test_nothing_to_correct_on_a_model_without_weighted_layers():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    out, res = CorrectBias().run(model, [{"x": np.ones((1, 2), np.float32)}])
    assert not res.modified and out is model


def test_a_bias_from_a_constant_node_is_replaced_not_duplicated(capfd):
    """Paddle exports write biases as Constant nodes: the corrected bias takes that name once
    (an initializer beside a Constant output of one name: graph-surgeon warns of two tensors of
    one name on every cleanup, 62 times on PP-OCRv4 det)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 2, 1, 1)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "bv")
    nodes = [
        helper.make_node("Constant", [], ["b"], name="const_b", value=bias),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = [{"x": (rng.standard_normal((2, 2, 4, 4)) + 1).astype(np.float32)}]
    out, res = CorrectBias().run(model, feeds)
    assert res.counts["corrected"] == 1
    names = [o for n in out.graph.node for o in n.output] + [i.name for i in out.graph.initializer]
    assert names.count("b") == 1
    onnx.checker.check_model(out, full_check=True)
    assert "share the same name" not in "".join(capfd.readouterr())
