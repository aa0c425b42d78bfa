"""SmoothQuant keeps the FP32 function (ONNX Runtime, original vs smoothed) and its scales are the
paper's formula computed in plain numpy from the activations and weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.quant.smooth_quant import SmoothQuant

ort = pytest.importorskip("onnxruntime")


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _block(rng, k, n, ln_op: bool, gemm: bool):
    """x -> LayerNorm -> {MatMul Wq, MatMul Wk} ; x + LN-out residual -> MatMul/Gemm W2."""
    w = {
        name: (rng.standard_normal(shape) * 10.0 ** rng.uniform(-1, 1, (shape[0], 1))).astype(
            np.float32
        )
        for name, shape in (("wq", (k, n)), ("wk", (k, n)), ("w2", (k, n)))
    }
    gamma = (rng.standard_normal(k) * 10.0 ** rng.uniform(-1, 1.5, k)).astype(np.float32)
    beta = rng.standard_normal(k).astype(np.float32)
    inits = [numpy_helper.from_array(v, name) for name, v in w.items()]
    inits += [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(beta, "beta")]
    nodes = []
    if ln_op:
        nodes.append(helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"]))
    else:  # decomposed: (x - mean) / sqrt(var + eps) * gamma + beta, ending in an Add
        nodes += [
            helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
            helper.make_node("Sub", ["x", "mu"], ["xc"]),
            helper.make_node("Mul", ["xc", "xc"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
            helper.make_node("Add", ["var", "eps"], ["ve"]),
            helper.make_node("Sqrt", ["ve"], ["sd"]),
            helper.make_node("Div", ["xc", "sd"], ["xn"]),
            helper.make_node("Mul", ["xn", "gamma"], ["xg"]),
            helper.make_node("Add", ["xg", "beta"], ["ln"]),
        ]
        inits.append(numpy_helper.from_array(np.array(1e-5, np.float32), "eps"))
    nodes += [
        helper.make_node("MatMul", ["ln", "wq"], ["q"]),
        helper.make_node("MatMul", ["ln", "wk"], ["kk"]),
        helper.make_node("Add", ["x", "ln"], ["res"]),
    ]
    if gemm:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w["w2"].T), "w2t"))
        nodes.append(helper.make_node("Gemm", ["res", "w2t"], ["y2"], transB=1))
    else:
        nodes.append(helper.make_node("MatMul", ["res", "w2"], ["y2"]))
    rows = [4, k] if gemm else [2, 3, k]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, rows)],
        [
            helper.make_tensor_value_info(o, TensorProto.FLOAT, rows[:-1] + [n])
            for o in ("q", "kk", "y2")
        ],
        inits,
    )
    opset = 17 if ln_op else 13
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), w, rows


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(2, 12),
    n=st.integers(1, 8),
    ln_op=st.booleans(),
    gemm=st.booleans(),
    alpha=st.sampled_from([0.25, 0.5, 0.8]),
)
def test_smoothed_block_matches_and_scales_follow_the_formula(seed, k, n, ln_op, gemm, alpha):
    rng = np.random.default_rng(seed)
    model, w, rows = _block(rng, k, n, ln_op, gemm)
    feeds = [{"x": (rng.standard_normal(rows) * 4).astype(np.float32)} for _ in range(3)]
    out, res = SmoothQuant(alpha=alpha).run(model, feeds)
    for feed in feeds:
        for r, g in zip(_run(model, feed), _run(out, feed), strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))
    # plain numpy reference: the LayerNorm output and the residual, their channel maxima
    xs = np.concatenate([f["x"].reshape(-1, k).astype(np.float64) for f in feeds])
    mu = xs.mean(1, keepdims=True)
    var = ((xs - mu) ** 2).mean(1, keepdims=True)
    gamma = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "gamma"))
    beta = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "beta"))
    ln = (xs - mu) / np.sqrt(var + 1e-5) * gamma + beta
    expect = {}
    for name, act, ws in (("wq", ln, ("wq", "wk")), ("w2", xs + ln, ("w2",))):
        wmax = np.max([np.abs(w[v]).max(1) for v in ws], axis=0)
        expect[name] = np.abs(act).max(0) ** alpha / wmax ** (1 - alpha)
    got = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    s_q = got["wq"].astype(np.float64) / w["wq"]
    s_2 = (got["w2t"].T if gemm else got["w2"]).astype(np.float64) / w["w2"]
    np.testing.assert_allclose(s_q, np.broadcast_to(expect["wq"][:, None], s_q.shape), rtol=1e-3)
    np.testing.assert_allclose(s_2, np.broadcast_to(expect["w2"][:, None], s_2.shape), rtol=1e-3)
    assert res.counts["smoothed"] == 2
    assert res.counts["folded_into_layernorm"] == 0  # ln is also read by the residual Add
    # a second run finds the channels balanced already
    _, again = SmoothQuant(alpha=alpha).run(out, feeds)
    assert not again.modified


def test_layernorm_feeding_only_matmuls_is_folded_not_a_mul():
    rng = np.random.default_rng(3)
    model, _w, rows = _block(rng, 6, 4, True, False)
    g = model.graph
    res_node = next(n for n in g.node if n.op_type == "Add")
    res_node.input[1] = "x"  # the residual no longer reads the LayerNorm output
    feeds = [{"x": (rng.standard_normal(rows) * 4).astype(np.float32)}]
    out, res = SmoothQuant().run(model, feeds)
    assert res.counts["folded_into_layernorm"] == 1
    assert sum(n.op_type == "Mul" for n in out.graph.node) == 1  # only before the residual MatMul
    for r, got in zip(_run(model, feeds[0]), _run(out, feeds[0]), strict=True):
        np.testing.assert_allclose(got, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))


def test_no_layernorm_or_add_source_no_change():
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((3, 2)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    out, res = SmoothQuant().run(model, [{"x": np.ones((2, 3), np.float32)}])
    assert not res.modified and out is model
    with pytest.raises(ValueError):
        SmoothQuant(alpha=1.5)


def test_onnx_checker_accepts_smoothed_model():
    rng = np.random.default_rng(5)
    model, _w, rows = _block(rng, 5, 3, True, True)
    onnx.checker.check_model(model, full_check=True)
    out, _ = SmoothQuant().run(model, [{"x": rng.standard_normal(rows).astype(np.float32)}])
    onnx.checker.check_model(out, full_check=True)


def test_smoothing_leaves_pp_ocrv4_rec_computing_the_same():
    """A real model (paddle2onnx's PP-OCRv4 rec: LayerNorm/Add-fed MatMuls in its SVTR neck)."""
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    model = onnx.load(Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.uniform(-1, 1, (4, 3, 48, 320)).astype(np.float32)} for _ in range(2)]
    out, res = SmoothQuant(alpha=0.5).run(model, feeds)
    assert res.counts["smoothed"] > 0
    x = rng.uniform(-1, 1, (4, 3, 48, 320)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    a, b = ref.run(None, {"x": x})[0], got.run(None, {"x": x})[0]
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(np.abs(a).max()))
