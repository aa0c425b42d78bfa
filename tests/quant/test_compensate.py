"""Activation-aware weight compensation (quant.compensate): least squares and both roundings
(nearest, the default, and GPTQ) against plain references, and the compensated Q/DQ model
against ONNX Runtime.

References: the least-squares step is numpy.linalg.lstsq on the stacked problem (data rows,
then sqrt(lam) I ridge rows); GPTQ's rounding is compared with round-to-nearest and, for a
few weights, with the best of all 2^d floor/ceil roundings (brute force).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.passes.insert_qdq import weight_scale
from onnx2trt_lib.quant.accuracy import run
from onnx2trt_lib.quant.api import quantize
from onnx2trt_lib.quant.compensate import (
    DAMP,
    RIDGE,
    _damped,
    _inverse_factor,
    compensate,
    compensate_matrix,
    fake_quant,
    fixed_point_scale,
    gptq,
    least_squares,
    rtn,
)
from onnx2trt_lib.quant.qdq import insert_qdq
from onnx2trt_lib.quant.qdq_bias import bias_slots, with_biases
from onnx2trt_lib.quant.switch import SwitchSession, quantized_layers

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def exact_ort(monkeypatch):
    """ONNX Runtime without graph optimisations (test_qdq_bias says why: the basic level moves
    Conv outputs by ~1e-4, which flips a rounding of the constant background now and then)."""
    import onnxruntime as ort

    from onnx2trt_lib.quant import _stats, accuracy, switch
    from onnx2trt_lib.quant.accuracy import _with_outputs

    def session(model, *, extra_outputs=(), threads=None):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        model = _with_outputs(model, extra_outputs) if extra_outputs else model
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    for module in (_stats, accuracy, switch):
        monkeypatch.setattr(module, "session", session)


@pytest.fixture
def no_check(monkeypatch):
    """Compensation without its held-out check (every channel keeps its fit): for the tests of
    what compensation writes, whatever the check would decide on their few rows (the module's
    default; pinned here should it change)."""
    from onnx2trt_lib.quant import compensate as module

    monkeypatch.setattr(module, "CHECK_EVERY", 0)


@pytest.fixture
def check(monkeypatch):
    """Compensation with its held-out check on (every 4th sample), as CHECK_EVERY = 4 asks."""
    from onnx2trt_lib.quant import compensate as module

    monkeypatch.setattr(module, "CHECK_EVERY", 4)


def _problem(rng, groups, m, cols, rows, bias):
    """(theta0 (g, m, k), H, G, A, Z): rows of FP32 inputs A and their quantized Z (+ ones)."""
    a = rng.normal(size=(groups, rows, cols)) * rng.uniform(0.2, 3, (groups, 1, cols))
    a += rng.normal(size=(groups, 1, cols))  # a non-zero mean: a background level
    step = rng.uniform(0.05, 0.5)
    z = np.rint(a / step) * step
    if bias:
        one = np.ones((groups, rows, 1))
        a, z = np.concatenate([a, one], 2), np.concatenate([z, one], 2)
    k = a.shape[2]
    theta0 = rng.normal(size=(groups, m, k))
    h = np.swapaxes(z, 1, 2) @ z / rows
    g = np.swapaxes(a, 1, 2) @ z / rows
    return theta0, h, g, a, z


def _problems(min_rows: int) -> dict:
    """Hypothesis strategies for _problem's arguments."""
    return dict(
        seed=st.integers(0, 2**16),
        groups=st.integers(1, 3),
        m=st.integers(1, 4),
        cols=st.integers(1, 6),
        rows=st.integers(min_rows, 40),
        bias=st.booleans(),
    )


@settings(max_examples=60, deadline=None)
@given(**_problems(min_rows=2))
def test_least_squares_equals_lstsq_with_ridge_rows(seed, groups, m, cols, rows, bias):
    rng = np.random.default_rng(seed)
    theta0, h, g, a, z = _problem(rng, groups, m, cols, rows, bias)
    # an all-zero quantized input leaves nothing to fit (lstsq's minimum norm answer is 0,
    # ours keeps the original weights): not a least-squares question
    assume(all(np.mean(np.diag(hg)) > 1e-6 for hg in h))
    got = least_squares(theta0, h, g)
    for gi in range(groups):
        lam = RIDGE * np.mean(np.diag(h[gi]))
        k = h.shape[-1]
        # min ||A theta0^T - Z theta^T||^2 / rows + lam ||theta^T - theta0^T||^2
        lhs = np.vstack([z[gi] / np.sqrt(rows), np.sqrt(lam) * np.eye(k)])
        rhs = np.vstack([a[gi] @ theta0[gi].T / np.sqrt(rows), np.sqrt(lam) * theta0[gi].T])
        want = np.linalg.lstsq(lhs, rhs, rcond=None)[0].T
        np.testing.assert_allclose(got[gi], want, rtol=1e-6, atol=1e-8 * np.abs(want).max())


def _error(w, q, s, h):
    d = w - q * s[..., None]
    return float(np.einsum("ri,ij,rj->", d, h, d))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    groups=st.integers(1, 3),
    m=st.integers(1, 5),
    cols=st.integers(1, 8),
    bias=st.booleans(),
    rounding=st.sampled_from(["gptq", "nearest"]),
)
def test_compensated_weights_are_int8_multiples_that_insert_qdq_reproduces(
    seed, groups, m, cols, bias, rounding
):
    """Every weight is q * scale with integer q in [-127, 127], every row reaches |q| = 127, and
    insert-qdq's scale of the written row is that scale (so its Q/DQ gives back q * scale)."""
    rng = np.random.default_rng(seed)
    theta0, h, g, _, _ = _problem(rng, groups, m, cols, 50, bias)
    theta0 *= rng.uniform(1e-3, 1e3)
    q, scale, rest = compensate_matrix(theta0, h, g, cols, rounding=rounding)
    assert np.array_equal(q, np.rint(q)) and np.abs(q).max() <= 127
    np.testing.assert_array_equal(np.abs(q).max(axis=-1), 127)
    written = (q.astype(np.float32) * scale[..., None]).astype(np.float32)
    np.testing.assert_array_equal(weight_scale(written.reshape(-1, cols), 0), scale.reshape(-1))
    back = np.rint(written / scale[..., None]).astype(np.float32) * scale[..., None]
    np.testing.assert_array_equal(back.astype(np.float32), written)
    assert rest.shape == (groups, m, int(bias))


def test_fixed_point_scale_round_trips_every_float_row():
    """Over many magnitudes: the scale of a row whose max is float32(127 s) is s again."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(20000, 3)) * 10.0 ** rng.uniform(-8, 8, (20000, 1))
    s = fixed_point_scale(rows)
    top = (np.float32(127) * s).astype(np.float32)
    np.testing.assert_array_equal(weight_scale(top[:, None], 0), s)


def test_gptq_output_error_below_round_to_nearest_on_average():
    """On correlated inputs GPTQ's output error (W - Q) H (W - Q)^T is below round-to-nearest's
    in the mean over draws (it is a greedy method: single draws may be worse)."""
    rng = np.random.default_rng(1)
    g_err, r_err = [], []
    for _ in range(100):
        cols, rows = int(rng.integers(4, 24)), 200
        x = rng.normal(size=(rows, cols)) @ rng.normal(size=(cols, cols)) + rng.normal(size=cols)
        h = x.T @ x / rows
        w = rng.normal(size=(6, cols))
        s = fixed_point_scale(w)
        q, _ = gptq(w, _inverse_factor(_damped(h, DAMP)), s, cols)
        g_err.append(_error(w, q, s, h))
        r_err.append(_error(w, rtn(w, s), s, h))
    assert np.mean(g_err) < 0.8 * np.mean(r_err)
    assert np.mean(np.array(g_err) <= np.array(r_err)) > 0.9


def test_gptq_against_the_best_floor_ceil_rounding():
    """Tiny problems (1 row, d <= 6 weights): O = the best of all 2^d floor/ceil roundings,
    R = round to nearest (>= O), G = GPTQ. Summed over draws GPTQ's excess over O is well
    under round-to-nearest's, it is at most R on almost every draw, and where it is worse, by
    less than a quarter step on the largest input (s^2 max diag H / 4): no draw far off. (GPTQ
    is greedy and may leave the floor/ceil pairs, so single draws can go either way.)"""
    rng = np.random.default_rng(2)
    gs_, rs_, os_ = [], [], []
    for _ in range(300):
        d, rows = int(rng.integers(2, 7)), 60
        x = rng.normal(size=(rows, d)) @ rng.normal(size=(d, d)) + 2 * rng.normal(size=d)
        h = x.T @ x / rows
        w = rng.normal(size=(1, d))
        s = fixed_point_scale(w)
        q, _ = gptq(w, _inverse_factor(_damped(h, DAMP)), s, d)
        g, r = _error(w, q, s, h), _error(w, rtn(w, s), s, h)
        low = np.floor(w / s[:, None])
        o = min(_error(w, low + np.array(b), s, h) for b in itertools.product((0.0, 1.0), repeat=d))
        assert r >= o - 1e-12
        assert g - r <= 0.25 * float(s[0]) ** 2 * np.max(np.diag(h))
        gs_.append(g)
        rs_.append(r)
        os_.append(o)
    g, r, o = (np.array(v) for v in (gs_, rs_, os_))
    assert np.sum(g - o) < 0.5 * np.sum(r - o), (np.sum(g - o), np.sum(r - o))
    assert np.mean(g <= r + 1e-12) > 0.9


# --- the compensated model in ONNX Runtime ---------------------------------------------------


def background_model(rng, c=3):
    """x (N, c, 8, 8) -> depthwise 3x3 Conv (bias) -> Relu -> 1x1 Conv (no bias) -> Relu ->
    GlobalAveragePool -> Flatten -> Gemm(transB) -> MatMul -> Add: every kind compensate
    handles."""
    a = {
        "wd": rng.normal(size=(c, 1, 3, 3)).astype(np.float32),
        "bd": rng.normal(size=c).astype(np.float32),
        "wp": rng.normal(size=(4, c, 1, 1)).astype(np.float32),
        "wg": rng.normal(size=(5, 4)).astype(np.float32),
        "cg": rng.normal(size=5).astype(np.float32),
        "wm": rng.normal(size=(5, 3)).astype(np.float32),
        "bm": rng.normal(size=3).astype(np.float32),
    }
    # a depthwise kernel with a small sum: its weight rounding changes the DC gain
    a["wd"] -= a["wd"].mean(axis=(2, 3), keepdims=True) * 0.9
    nodes = [
        helper.make_node("Conv", ["x", "wd", "bd"], ["y1"], name="dw", group=c, pads=[1] * 4),
        helper.make_node("Relu", ["y1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wp"], ["y2"], name="pw"),
        helper.make_node("Relu", ["y2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "cg"], ["y3"], name="gemm", transB=1),
        helper.make_node("MatMul", ["y3", "wm"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "bm"], ["y"], name="bias_add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(v, k) for k, v in a.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), a


LAYERS = ("dw", "pw", "gemm", "matmul")


def background_data(rng, n, c=3, density=0.1):
    """Mostly a per-channel constant background (between rounding steps) plus sparse strokes."""
    x = np.broadcast_to(np.array([2.37, -1.13, 0.61][:c])[None, :, None, None], (n, c, 8, 8))
    x = x + (rng.random((n, c, 8, 8)) < density) * rng.normal(0, 3, (n, c, 8, 8))
    return x.astype(np.float32)


def _ranges(model, feeds):
    names = ["x", "r1", "f", "y3"]
    from onnx2trt_lib.quant._stats import reduce_tensors

    amax = reduce_tensors(
        model,
        feeds,
        names,
        lambda _, v, acc: np.maximum(np.abs(v).max(), acc if acc is not None else 0.0),
    )
    return {k: float(v) for k, v in amax.items()}


@pytest.fixture(scope="module")
def background():
    rng = np.random.default_rng(0)
    model, a = background_model(rng)
    calib = [{"x": background_data(rng, 32)} for _ in range(2)]
    test = [{"x": background_data(rng, 64)}]
    return model, a, calib, test, _ranges(model, calib)


def _output_error(model, reference, feeds):
    got = np.concatenate(run(model, feeds)["y"])
    want = np.concatenate(run(reference, feeds)["y"])
    return float(np.mean((got - want) ** 2))


def conv_model(rng, c=3):
    """x -> depthwise 3x3 Conv (a kernel with a small sum, bias) -> Relu -> 1x1 Conv, the
    PP-LCNet pattern where rec's INT8 error starts."""
    a = {
        "wd": rng.normal(size=(c, 1, 3, 3)).astype(np.float32),
        "bd": rng.normal(size=c).astype(np.float32),
        "wp": rng.normal(size=(4, c, 1, 1)).astype(np.float32),
    }
    a["wd"] -= a["wd"].mean(axis=(2, 3), keepdims=True) * 0.9
    nodes = [
        helper.make_node("Conv", ["x", "wd", "bd"], ["y1"], name="dw", group=c, pads=[1] * 4),
        helper.make_node("Relu", ["y1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wp"], ["y"], name="pw"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in a.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("rounding", ["gptq", "nearest"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compensation_cuts_the_output_error_of_a_systematic_input_error(
    seed, rounding, monkeypatch
):
    """Constant background + sparse strokes (3% of pixels): the Q/DQ model with compensation
    is closer to FP32 than without (ONNX Runtime, on held-out inputs and on the calibration
    rows), and the per-channel mean of the depthwise layer's error, the systematic part,
    shrinks (all but goes with GPTQ; the rest is the strokes' random rounding)."""
    from onnx2trt_lib.quant import compensate as module
    from onnx2trt_lib.quant._stats import channel_means, reduce_tensors

    monkeypatch.setattr(module, "ROUNDING", rounding)
    rng = np.random.default_rng(seed)
    model = conv_model(rng)
    calib = [{"x": background_data(rng, 16, density=0.03)} for _ in range(2)]
    test = [{"x": background_data(rng, 64, density=0.03)}]
    amax = reduce_tensors(
        model, calib, ["x", "r1"], lambda _, v, acc: np.maximum(np.abs(v).max(), acc or 0.0)
    )
    ranges = {k: float(v) for k, v in amax.items()}
    plain = quantize(model, ranges, data=calib, protect=False, compensate=False).model
    comp = quantize(model, ranges, data=calib, protect=False, compensate=True).model
    for feeds in (test, calib):
        ref = np.concatenate(run(model, feeds)["y"])
        before = np.mean((np.concatenate(run(plain, feeds)["y"]) - ref) ** 2)
        after = np.mean((np.concatenate(run(comp, feeds)["y"]) - ref) ** 2)
        assert after < before, (before, after)
    fp = channel_means(model, calib, {"y1": 1})["y1"]
    shift = {}
    for name, q in (("plain", plain), ("comp", comp)):
        shift[name] = np.abs(channel_means(q, calib, {"y1": 1})["y1"] - fp).max()
    # GPTQ's bias column takes the final mean residual; nearest keeps the least-squares bias,
    # which shrinks the mean shift without matching the rows' mean exactly
    assert shift["comp"] < (0.1 if rounding == "gptq" else 1.0) * shift["plain"], shift


def test_every_kind_of_layer_is_compensated(background, no_check):
    """Depthwise Conv, 1x1 Conv without bias, Gemm(transB) and MatMul + Add all get new
    weights; with 4 rows the Gemm and the MatMul (5 and 6 columns with their bias) are left
    as they are, and said so."""
    model, a, calib, test, ranges = background
    comp = quantize(model, ranges, data=calib, protect=False, compensate=True)
    assert set(quantized_layers(comp.model)) == set(LAYERS)
    assert any("compensation: 4 layer(s)" in n for n in comp.notes), comp.notes
    few = quantize(model, ranges, data=[{"x": calib[0]["x"][:4]}], protect=False, compensate=True)
    assert any("compensation: 2 layer(s)" in n and "2 left as" in n for n in few.notes), few.notes
    inits = {i.name: numpy_helper.to_array(i) for i in few.model.graph.initializer}
    np.testing.assert_array_equal(inits["wg"], a["wg"])
    np.testing.assert_array_equal(inits["wm"], a["wm"])


def test_written_weights_round_trip_through_their_qdq_bit_exactly(background, no_check):
    """ONNX Runtime's DequantizeLinear(QuantizeLinear(W'')) with the scale insert-qdq wrote is
    W'' itself for every compensated weight."""
    model, a, calib, test, ranges = background
    q = quantize(model, ranges, data=calib, protect=False, compensate=True).model
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    checked = 0
    for node in q.graph.node:
        if node.name not in LAYERS:
            continue
        dq = producers[node.input[1]]
        qn = producers[dq.input[0]]
        w, scale, zero = (inits[t] for t in qn.input)
        axis = next((at.i for at in qn.attribute if at.name == "axis"), 1)
        nodes = [
            helper.make_node("QuantizeLinear", ["w", "s", "z"], ["q"], axis=axis),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["out"], axis=axis),
        ]
        graph = helper.make_graph(
            nodes,
            "rt",
            [helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape))],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(w.shape))],
            [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero, "z")],
        )
        rt = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        out = run(rt, [{"w": w}])["out"][0]
        np.testing.assert_array_equal(out, w)
        assert not np.array_equal(w, a[qn.input[0]])  # compensated, not the original
        checked += 1
    assert checked == len(LAYERS)


def test_float_layers_keep_original_weights_and_the_switch_matches_written_models(
    background, no_check
):
    """with_biases with no INT8 layer gives back the original model (same ORT outputs, same
    initializers); for every mix of float layers the switch model answers like the written
    Q/DQ model with the compensation on its INT8 layers only, and the all-float mix is FP32."""
    model, a, calib, test, ranges = background
    slotted, slots = bias_slots(model, LAYERS)
    biases, weights, skipped = compensate(slotted, ranges, calib, LAYERS, slots)
    assert not skipped and set(weights) == set(LAYERS) and set(biases) == set(LAYERS)

    def written(int8):
        return with_biases(with_biases(slotted, biases, int8), weights, int8)

    none = written([])
    orig = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for init in none.graph.initializer:
        if init.name in orig:
            np.testing.assert_array_equal(numpy_helper.to_array(init), orig[init.name])
    np.testing.assert_array_equal(
        np.concatenate(run(none, test)["y"]), np.concatenate(run(model, test)["y"])
    )
    full = insert_qdq(written(LAYERS), ranges=ranges)[0]
    switch = SwitchSession(full, quantized_layers(full), ranges, (), biases, weights)
    for r in range(len(LAYERS) + 1):
        for floats in itertools.combinations(LAYERS, r):
            int8 = [k for k in LAYERS if k not in floats]
            want_model = insert_qdq(written(int8), exclude_nodes=list(floats), ranges=ranges)[0]
            want = np.concatenate(run(want_model, test)["y"])
            got = switch.run(int8, test)["y"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            if not int8:
                np.testing.assert_allclose(
                    got, np.concatenate(run(model, test)["y"]), rtol=1e-5, atol=1e-5
                )
    layers = quantized_layers(full)
    for base in (layers, []):  # runs from the cuts (the weights' and biases' switches after them)
        flipped = switch.run_flips(switch.start(base, test[0]), layers)
        for layer, out in zip(layers, flipped, strict=True):
            whole = switch.run_batch(set(base) ^ {layer}, test[0])
            np.testing.assert_array_equal(out["y"], whole["y"])
    assert switch._suffixes  # they did run from cuts


def test_quantize_keeps_an_excluded_layer_original(background):
    """quantize(compensate=True, exclude=[layer]): that layer's weight and bias are the original
    ones in the written model, the INT8 layers' weights moved."""
    model, a, calib, test, ranges = background
    for float_layer in LAYERS:
        res = quantize(
            model, ranges, data=calib, protect=False, exclude=[float_layer], compensate=True
        )
        inits = {i.name: numpy_helper.to_array(i) for i in res.model.graph.initializer}
        nodes = {n.name: n for n in res.model.graph.node}
        weight = {"dw": "wd", "pw": "wp", "gemm": "wg", "matmul": "wm"}
        np.testing.assert_array_equal(inits[weight[float_layer]], a[weight[float_layer]])
        if float_layer in ("dw", "gemm"):
            np.testing.assert_array_equal(
                inits[nodes[float_layer].input[2]], a[{"dw": "bd", "gemm": "cg"}[float_layer]]
            )
        assert set(quantized_layers(res.model)) == set(LAYERS) - {float_layer}


def test_fake_quant_matches_onnx_runtime_q_dq():
    """fake_quant (the X~ of the sums) is ORT's QuantizeLinear -> DequantizeLinear, saturation
    to [-128, 127] included."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(4000,)) * 3).astype(np.float32)
    x[:5] = [-1000, 1000, 0.5, -0.5, 0]
    scale = np.float32(0.0173)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4000])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4000])],
        [
            numpy_helper.from_array(np.array(scale), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    np.testing.assert_array_equal(fake_quant(x, scale), run(m, [{"x": x}])["out"][0])


def test_compensated_qdq_model_parses_and_builds_in_tensorrt_rtx(background):
    from test_prepare_cli import _rtx_builds

    model, a, calib, test, ranges = background
    q = quantize(model, ranges, data=calib, protect=False, compensate=True).model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(q)
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # no profile needed
    assert _rtx_builds(fixed)


def test_cli_compensate_needs_qdq_and_data_and_reports(tmp_path, background, no_check):
    """calibrate --compensate without --qdq, or with --bias-correction, and quantize
    --compensate without --data: one-line errors, nothing written; calibrate --qdq --compensate
    says how many layers were compensated."""
    import json

    from click.testing import CliRunner

    from onnx2trt_lib.cli.main import cli

    model, a, calib, test, ranges = background
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "x.npy", np.concatenate([f["x"] for f in calib]))
    cache, out = tmp_path / "c.cache", tmp_path / "q.onnx"
    base = ["calibrate", str(path), "--data", str(tmp_path / "x.npy"), "-o", str(cache)]
    for extra in (["--compensate"], ["--qdq", str(out), "--compensate", "--bias-correction"]):
        res = CliRunner().invoke(cli, [*base, *extra])
        assert res.exit_code != 0 and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert not cache.exists() and not out.exists()
    res = CliRunner().invoke(
        cli, [*base, "--qdq", str(out), "--compensate", "--no-protect", "--json"]
    )
    assert res.exit_code == 0, res.output
    notes = json.loads(res.output)["qdq"]["notes"]
    assert any("compensation: 4 layer(s)" in n for n in notes), notes
    res = CliRunner().invoke(
        cli,
        ["quantize", str(path), "--cache", str(cache), "-o", str(tmp_path / "q2.onnx")]
        + ["--compensate"],
    )
    assert res.exit_code != 0 and "--data" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "q2.onnx").exists()


def test_cli_compensates_by_default_and_bias_correction_or_no_compensate_turn_it_off(
    tmp_path, background, no_check, monkeypatch
):
    """calibrate --qdq and quantize --data compensate unless told --no-compensate; a plain
    --bias-correction switches the default compensation off instead of failing; without --data
    quantize writes the plain Q/DQ model without a word about compensation. (The default's
    comparison with the plain model is off here: the wiring is the question.)"""
    import json

    from click.testing import CliRunner

    from onnx2trt_lib.cli.main import cli
    from onnx2trt_lib.quant import api

    monkeypatch.setattr(api, "DEFAULT_COMPENSATE_CHECK", False)

    model, a, calib, test, ranges = background
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = tmp_path / "x.npy"
    np.save(x, np.concatenate([f["x"] for f in calib]))
    cache = tmp_path / "c.cache"
    base = ["calibrate", str(path), "--data", str(x), "-o", str(cache), "--no-protect", "--json"]

    def notes(extra: list[str], key: str = "qdq") -> list[str]:
        out = tmp_path / f"q{len(list(tmp_path.iterdir()))}.onnx"
        args = [*base, "--qdq", str(out), *extra] if key == "qdq" else extra
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        got = json.loads(res.output)
        return list((got[key] if key else got)["notes"])

    assert any("compensation: 4 layer(s)" in n for n in notes([]))
    for extra in (["--no-compensate"], ["--bias-correction"]):
        assert not any("compensation" in n for n in notes(extra)), extra
    assert any("bias correction" in n for n in notes(["--bias-correction"]))
    q = ["quantize", str(path), "--cache", str(cache), "--no-protect", "--json", "-o"]
    assert any(
        "compensation: 4" in n for n in notes([*q, str(tmp_path / "a.onnx"), "--data", str(x)], "")
    )
    plain = notes([*q, str(tmp_path / "b.onnx"), "--data", str(x), "--no-compensate"], "")
    assert not any("compensation" in n for n in plain)
    assert not any("compensation" in n for n in notes([*q, str(tmp_path / "c.onnx")], ""))


@pytest.mark.slow
def test_protection_keeps_float_layers_original(digits):
    """On the digits CNN with protection (conv3's input range cut to a tenth, so protection
    keeps layers in float): every layer kept in float has its original weight and bias in the
    written model; the INT8 convs carry compensated weights (the fc layer, with 64 rows for its
    columns, is left as it is)."""
    model, data = digits
    from digits_cnn import max_abs_ranges

    ranges = max_abs_ranges(model, data["x_calib"])
    ranges["r2"] *= 0.1
    name = model.graph.input[0].name
    feeds = [{name: data["x_calib"][i : i + 50]} for i in range(0, 200, 50)]
    res = quantize(model, ranges, data=feeds, compensate=True)
    orig = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    new = {i.name: numpy_helper.to_array(i) for i in res.model.graph.initializer}
    floats = {e.node for e in res.protection.excluded}
    int8 = set(quantized_layers(res.model))
    producers = {o: n for n in res.model.graph.node for o in n.output}
    changed = set()
    for node in res.model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        if node.name in floats:
            for t in node.input[1:]:
                if t:
                    np.testing.assert_array_equal(new[t], orig.get(t, np.zeros_like(new[t])))
        elif node.name in int8:
            w = producers[producers[node.input[1]].input[0]].input[0]
            if not np.array_equal(new[w], orig[w]):
                changed.add(node.name)
    convs = {n.name for n in res.model.graph.node if n.op_type == "Conv"}
    assert floats and changed == int8 & convs and changed


def test_gptq_bias_takes_the_mean_residual():
    """After GPTQ the bias leaves little mean error over the calibration rows: mean(Theta0 A)
    ~ W'' mean(X~) + b'' (the last column gets the error feedback, up to ridge and damping)."""
    rng = np.random.default_rng(4)
    theta0, h, g, a, z = _problem(rng, 2, 3, 5, 400, True)
    q, scale, rest = compensate_matrix(theta0, h, g, 5, rounding="gptq")
    full = np.concatenate([q * scale[..., None], rest], axis=2)
    residual = (theta0 @ a.mean(axis=1)[..., None]) - full @ z.mean(axis=1)[..., None]
    nearest = np.concatenate([rtn(theta0[..., :5], scale) * scale[..., None], theta0[..., 5:]], 2)
    plain = (theta0 @ a.mean(axis=1)[..., None]) - nearest @ z.mean(axis=1)[..., None]
    assert np.abs(residual).max() < 0.2 * np.abs(plain).max(), (residual, plain)


def test_fit_rows_are_the_search_half_with_a_fixed_batch_and_an_odd_batch_count(background):
    """A fixed batch of 20 and 3 batches: protection searches on batch 0 and holds out batches 1
    and 2, so bias correction and compensation must fit on batch 0 alone (the old rule, half
    the rows, took batch 1 too and flattered the held-out agreement)."""
    from onnx2trt_lib.quant.api import _search_rows

    model, _, _, _, ranges = background
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 20
    rng = np.random.default_rng(1)
    batches = [{"x": background_data(rng, 20)} for _ in range(3)]
    options = {"ranges": ranges, "exclude_tensors": ()}
    *_, feeds = _search_rows(fixed, options, batches, [])
    assert len(feeds) == 1
    np.testing.assert_array_equal(feeds[0]["x"], batches[0]["x"])


def _one_node_model(node, w):
    """x -> node(x, w) -> y, opset 13, shapes left to ONNX Runtime."""
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _ort(model, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    spatial=st.integers(1, 3),
    groups=st.integers(1, 3),
)
def test_patches_times_matrices_is_onnx_runtime_conv(seed, spatial, groups):
    """The rows compensation fits (im2col patches) times its (groups, out, cols) matrices are
    ONNX Runtime's Conv, for 1-D/2-D/3-D kernels, strides, dilations, asymmetric pads, groups."""
    from onnx2trt_lib.quant.compensate import find_layers, patches

    rng = np.random.default_rng(seed)
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    ks = [int(rng.integers(1, 4)) for _ in range(spatial)]
    strides = [int(rng.integers(1, 4)) for _ in range(spatial)]
    dilations = [int(rng.integers(1, 3)) for _ in range(spatial)]
    pads = [int(rng.integers(0, 3)) for _ in range(2 * spatial)]
    size = [int(rng.integers(5, 9)) for _ in range(spatial)]
    x = rng.normal(size=(2, cin, *size)).astype(np.float32)
    w = rng.normal(size=(cout, cin // groups, *ks)).astype(np.float32)
    node = helper.make_node(
        "Conv",
        ["x", "w"],
        ["y"],
        name="c",
        group=groups,
        kernel_shape=ks,
        strides=strides,
        dilations=dilations,
        pads=pads,
    )
    model = _one_node_model(node, w)
    (layer,), skipped = find_layers(model, ["c"], {})
    assert not skipped
    rows = patches(x, layer.conv, None)
    ours = np.einsum("rgk,gok->rgo", rows.reshape(len(rows), groups, -1), layer.matrices())
    want = np.moveaxis(_ort(model, {"x": x}), 1, -1).reshape(-1, cout)
    np.testing.assert_allclose(ours.reshape(len(rows), cout), want, rtol=1e-4, atol=1e-4)


def _padded_patches(x: np.ndarray, conv, rows: np.ndarray) -> np.ndarray:
    """im2col the plain way: pad all of x, take every window, keep the listed positions."""
    spatial = x.ndim - 2
    pads = conv["pads"]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    ks, st, dl = conv["kernel"], conv["strides"], conv["dilations"]
    span = [(k - 1) * d + 1 for k, d in zip(ks, dl, strict=True)]
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + spatial)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in st))]
    win = win[(Ellipsis, *(slice(None, None, d) for d in dl))]  # (N, C, *out, *kernel)
    pos = np.unravel_index(rows, (x.shape[0], *win.shape[2 : 2 + spatial]))
    return win[(pos[0], slice(None), *pos[1:])]


def _random_conv(rng, spatial: int) -> dict:
    return {
        "kernel": [int(rng.integers(1, 4)) for _ in range(spatial)],
        "strides": [int(rng.integers(1, 4)) for _ in range(spatial)],
        "dilations": [int(rng.integers(1, 3)) for _ in range(spatial)],
        "pads": [int(rng.integers(0, 3)) for _ in range(2 * spatial)],
    }


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), spatial=st.integers(1, 3), half=st.booleans())
def test_patches_gathers_the_padded_windows_bit_for_bit(seed, spatial, half):
    """patches gathers only the listed positions, without a padded copy of x: the same values
    (zeros where a tap falls in the padding) as padding x and taking every window, for any
    subset of positions, 1-D/2-D/3-D, strides, dilations, asymmetric pads, float32/16."""
    from onnx2trt_lib.quant.compensate import patches

    rng = np.random.default_rng(seed)
    conv = _random_conv(rng, spatial)
    size = [int(rng.integers(4, 8)) for _ in range(spatial)]
    pads, span = (
        conv["pads"],
        [(k - 1) * d + 1 for k, d in zip(conv["kernel"], conv["dilations"], strict=True)],
    )
    assume(all(size[i] + pads[i] + pads[i + spatial] >= span[i] for i in range(spatial)))
    x = rng.normal(size=(int(rng.integers(1, 4)), int(rng.integers(1, 4)), *size))
    x = x.astype(np.float16 if half else np.float32)
    every = patches(x, conv, None)
    rows = np.sort(rng.choice(len(every), int(rng.integers(0, len(every) + 1)), replace=False))
    want = _padded_patches(x, conv, rows)
    got = patches(x, conv, rows)
    assert got.dtype == x.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(every, _padded_patches(x, conv, np.arange(len(every))))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), conv=st.booleans(), cuts=st.integers(1, 4))
def test_sums_of_a_batch_in_parts_are_those_of_the_whole_batch(seed, conv, cuts):
    """_Sums.add of a batch given as consecutive parts of its rows (what tensor_parts yields)
    samples the same rows and sums the same H and D, bit for bit, as of the joined batch."""
    from onnx2trt_lib.quant import compensate as module
    from onnx2trt_lib.quant.compensate import _Sums, find_layers

    rng = np.random.default_rng(seed)
    rows = int(rng.integers(max(cuts, 2), 12)) if conv else int(rng.integers(30, 60))
    if conv:
        w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="l", pads=[1, 0, 1, 2])
        x = rng.normal(size=(rows, 3, 9, 7)).astype(np.float32)
        (layer,), _ = find_layers(_one_node_model(node, w), ["l"], {})
    else:
        layer = _gemm_layer(rng, 5, 4)
        x = rng.normal(size=(rows, 5)).astype(np.float32)
    at = np.sort(rng.choice(np.arange(1, rows), cuts - 1, replace=False)) if cuts > 1 else []
    parts = np.split(x, at)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "MAX_ROWS", 40)  # fewer rows than the batch holds: a subsample
        mp.setattr(module, "MAX_VALUES", 1 << 30)
        whole, split = _Sums(layer, np.float32(0.3), 1), _Sums(layer, np.float32(0.3), 1)
        whole.add(x)
        split.add(parts)
    assert 0 < split.rows == whole.rows and split.samples == whole.samples == rows
    np.testing.assert_array_equal(split.h, whole.h)
    np.testing.assert_array_equal(split.d, whole.d)


@pytest.mark.parametrize(("op", "trans_b"), [("Gemm", 0), ("Gemm", 1), ("MatMul", 0)])
def test_gemm_and_matmul_matrices_are_out_by_in(op, trans_b):
    """matrices()[0] is (out, in) whatever the layout, and stored() gives the initializer back."""
    from onnx2trt_lib.quant.compensate import find_layers

    rng = np.random.default_rng(trans_b)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    w = rng.normal(size=(5, 6) if trans_b else (6, 5)).astype(np.float32)
    attrs = {"transB": trans_b} if op == "Gemm" else {}
    model = _one_node_model(helper.make_node(op, ["x", "w"], ["y"], name="l", **attrs), w)
    (layer,), _ = find_layers(model, ["l"], {})
    np.testing.assert_allclose(x @ layer.matrices()[0].T, _ort(model, {"x": x}), atol=1e-5)
    np.testing.assert_array_equal(layer.stored(layer.matrices()), w)


# --- the held-out check: a channel keeps its compensation only where it lowers the error ------


@settings(max_examples=60, deadline=None)
@given(**_problems(min_rows=1))
def test_held_out_errors_from_sums_equal_the_explicit_rows(seed, groups, m, cols, rows, bias):
    """held_out_errors(Theta0, Theta, H, D, E E^T) is, per output row, sum over the data rows
    of (Theta0 a - Theta z)^2 computed on the rows themselves."""
    from onnx2trt_lib.quant.compensate import held_out_errors

    rng = np.random.default_rng(seed)
    theta0, _, _, a, z = _problem(rng, groups, m, cols, rows, bias)
    theta = theta0 + rng.normal(size=theta0.shape) * rng.uniform(0, 0.3)
    e = a - z
    h = np.swapaxes(z, 1, 2) @ z
    d = np.swapaxes(e, 1, 2) @ z
    ee = np.swapaxes(e, 1, 2) @ e
    want = ((a @ np.swapaxes(theta0, 1, 2) - z @ np.swapaxes(theta, 1, 2)) ** 2).sum(axis=1)
    got = held_out_errors(theta0, theta, h, d, ee)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(want).max()))


def _gemm_layer(rng, cols, out):
    from onnx2trt_lib.quant.compensate import find_layers

    w = rng.normal(size=(out, cols)).astype(np.float32)
    model = _one_node_model(helper.make_node("Gemm", ["x", "w"], ["y"], name="l", transB=1), w)
    (layer,), _ = find_layers(model, ["l"], {})
    return layer


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), batches=st.integers(2, 4), per=st.integers(8, 20))
def test_check_rows_are_every_fourth_sample_and_the_choice_is_the_explicit_one(seed, batches, per):
    """The sums keep every CHECK_EVERY-th sample apart (counted across batches), and solve()
    keeps a channel's compensation exactly where the fit on the other rows, rounded, has a
    held-out error below (1 - MARGIN) x insert-qdq's rounding of the original weights (both
    computed here on the explicit held-out rows)."""
    from onnx2trt_lib.quant import compensate as module
    from onnx2trt_lib.quant.compensate import MARGIN, _Sums, insert_qdq_rounded, solve

    rng = np.random.default_rng(seed)
    cols, out = 3, 6
    layer = _gemm_layer(rng, cols, out)
    scale = np.float32(0.4)
    # a background level between rounding steps plus noise: the INT8 error is partly systematic
    xs = [
        (1.13 + rng.normal(0, rng.uniform(0.05, 1.0), size=(per, cols))).astype(np.float32)
        for _ in range(batches)
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "CHECK_EVERY", 4)
        sums = _Sums(layer, scale, batches)
        for x in xs:
            sums.add(x)
    x = np.concatenate(xs)
    check = np.arange(len(x)) % 4 == 3
    assert sums.rows == len(x) and sums.check_rows == int(check.sum())
    z = fake_quant(x, scale)
    np.testing.assert_allclose(sums.hc[0], z[check].T @ z[check], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sums.ec[0], (x - z)[check].T @ (x - z)[check], atol=1e-5)
    got = solve(layer, sums)
    w0 = layer.matrices()[0].astype(np.float64)
    if not check.any() or check.all():
        assert got.kept.all()
        return
    xf, zf = x[~check].astype(np.float64), z[~check].astype(np.float64)
    hf = zf.T @ zf / len(xf)
    q, s, _ = compensate_matrix(w0[None], hf[None], (xf.T @ zf / len(xf))[None], cols)
    fitted = (q[0].astype(np.float32) * s[0][:, None]).astype(np.float64)
    want_y = x[check] @ w0.T
    mine = ((want_y - z[check] @ fitted.T) ** 2).sum(axis=0)
    theirs = ((want_y - z[check] @ insert_qdq_rounded(w0).T.astype(np.float64)) ** 2).sum(axis=0)
    keep = mine < (1 - MARGIN) * theirs
    # a channel within float rounding of the margin may go either way
    near = np.abs(mine - (1 - MARGIN) * theirs) <= 1e-4 * theirs
    assert np.array_equal(got.kept[~near], keep[~near])
    # kept channels: the fit on all rows; the others: the original weights as they were
    q, s, _ = compensate_matrix(w0[None], (z.T @ z)[None] / len(x), (x.T @ z)[None] / len(x), cols)
    full = q[0].astype(np.float32) * s[0][:, None]
    np.testing.assert_array_equal(got.weight[~got.kept], layer.w[~got.kept])
    # float32 sums here vs float64 there: at most a rounding flip of one step, rarely
    step = np.abs(full).max(axis=1, keepdims=True) / 127
    diff = np.abs(got.weight - full)[got.kept]
    assert np.all(diff <= 1.001 * step[got.kept] + 1e-4 * np.abs(full[got.kept]))
    assert diff.size == 0 or np.mean(diff <= 1e-4 * np.abs(full[got.kept]) + 1e-7) >= 0.9


def test_a_layer_whose_compensation_does_not_generalise_is_left_as_it_is(check):
    """Pure noise input with no systematic error and just enough rows: the least-squares fit
    chases the noise of its rows and does not beat plain rounding on the held-out samples;
    compensate() leaves the layer and says why."""
    rng = np.random.default_rng(3)
    cols, out = 16, 8
    w = rng.normal(size=(out, cols)).astype(np.float32)
    model = _one_node_model(helper.make_node("Gemm", ["x", "w"], ["y"], name="l", transB=1), w)
    feeds = [{"x": rng.normal(size=(40, cols)).astype(np.float32)} for _ in range(2)]
    biases, weights, skipped = compensate(model, {"x": 4.0}, feeds, ["l"], {})
    assert not weights and not biases
    assert "held-out error" in skipped["l"]


def _sqnr(model, reference, feeds):
    from onnx2trt_lib.quant.accuracy import sqnr_db

    return sqnr_db(
        np.concatenate(run(reference, feeds)["y"]), np.concatenate(run(model, feeds)["y"])
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_compensation_competes_with_the_plain_search(seed):
    """Output SQNR as the criterion, on a model whose error is a systematic background. Bound
    between the plain and the compensated full-INT8 SQNR: the plain search must keep a layer
    float, the compensated one passes all INT8, so the default writes the compensated model.
    Bound below both: the plain search keeps everything INT8, compensation is not tried and
    the plain Q/DQ model is written, with a note. compensate=True applies it whatever."""
    from onnx2trt_lib.quant.agreement import Criterion

    rng = np.random.default_rng(seed)
    model = conv_model(rng)
    calib = [{"x": background_data(rng, 16, density=0.03)} for _ in range(2)]
    amax = _ranges_of(model, calib, ["x", "r1"])
    plain = quantize(model, amax, data=calib, protect=False, compensate=False).model
    comp = quantize(model, amax, data=calib, protect=False, compensate=True).model
    low, high = _sqnr(plain, model, calib), _sqnr(comp, model, calib)
    assert high > low + 2, (low, high)

    def flow(bound, **kw):
        crit = Criterion(min_sqnr_db=bound, agreement="sqnr")
        return quantize(model, amax, data=calib, criterion=crit, **kw)

    kept = flow((low + high) / 2)
    assert kept.protection.met and not kept.protection.excluded, kept.notes
    assert kept.protection.int8_mac_share_after == 1.0
    assert not any("dropped" in n or "compensation not tried" in n for n in kept.notes)
    # plain full INT8 misses the bound on the search rows: the compensated search goes first
    # and keeps every layer INT8, so the plain one is not run
    assert any(n.startswith("plain search not tried") for n in kept.notes), kept.notes
    np.testing.assert_allclose(_sqnr(kept.model, model, calib), high, atol=0.5)
    assert flow((low + high) / 2, compensate=False).protection.excluded  # plain needs a float layer
    skipped = flow(low - 3)
    assert any("compensation not tried" in n for n in skipped.notes), skipped.notes
    inits = {i.name: numpy_helper.to_array(i) for i in skipped.model.graph.initializer}
    want = {i.name: numpy_helper.to_array(i) for i in plain.graph.initializer}
    assert inits.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(inits[name], want[name])
    forced = flow(low - 3, compensate=True)
    assert not any("not tried" in n for n in forced.notes)
    np.testing.assert_allclose(_sqnr(forced.model, model, calib), high, atol=0.5)
    # no search (--no-protect): full INT8 compensated vs plain, the better one written
    full = flow((low + high) / 2, protect=False)
    assert not any("dropped" in n or "not tried" in n for n in full.notes), full.notes
    np.testing.assert_allclose(_sqnr(full.model, model, calib), high, atol=0.5)
    assert any("not tried" in n for n in flow(low - 3, protect=False).notes)


def _ranges_of(model, feeds, names):
    from onnx2trt_lib.quant._stats import reduce_tensors

    amax = reduce_tensors(
        model, feeds, names, lambda _, v, acc: np.maximum(np.abs(v).max(), acc or 0.0)
    )
    return {k: float(v) for k, v in amax.items()}


def test_default_compensation_is_dropped_where_full_int8_reads_worse_with_it():
    """Without a search (--no-protect), on a model and data where compensated full INT8 is
    further from FP32 than the plain one (32.1 vs 28.0 dB on these rows) and neither meets a
    40 dB bound: the default writes the plain model and says why."""
    from onnx2trt_lib.quant.agreement import Criterion

    rng = np.random.default_rng(0)
    model = conv_model(rng)
    calib = [{"x": background_data(rng, 32, density=0.03)} for _ in range(2)]
    amax = _ranges_of(model, calib, ["x", "r1"])
    plain = quantize(model, amax, data=calib, protect=False, compensate=False).model
    comp = quantize(model, amax, data=calib, protect=False, compensate=True).model
    assert _sqnr(comp, model, calib) < _sqnr(plain, model, calib) - 2
    crit = Criterion(min_sqnr_db=40.0, agreement="sqnr")
    got = quantize(model, amax, data=calib, protect=False, criterion=crit)
    assert any("compensation dropped: full INT8" in n for n in got.notes), got.notes
    np.testing.assert_allclose(_sqnr(got.model, model, calib), _sqnr(plain, model, calib))


def _background_case():
    """(model, ranges, data) of the competition tests: a systematic background error that
    compensation removes (seed 0)."""
    rng = np.random.default_rng(0)
    model = conv_model(rng)
    calib = [{"x": background_data(rng, 16, density=0.03)} for _ in range(2)]
    return model, _ranges_of(model, calib, ["x", "r1"]), calib


def test_a_compensated_mix_that_misses_the_criterion_never_beats_a_plain_one_that_meets_it():
    from types import SimpleNamespace as R

    from onnx2trt_lib.quant.api import SHARE_GAIN, _compensation_wins

    def rep(met, share):
        return R(met=met, int8_mac_share_after=share)

    assert not _compensation_wins(rep(False, 0.9), rep(True, 0.3))  # meeting it comes first
    assert _compensation_wins(rep(True, 0.3), rep(False, 0.9))
    for met in (True, False):  # then the INT8 share, by at least SHARE_GAIN
        assert _compensation_wins(rep(met, 0.6 + SHARE_GAIN + 1e-9), rep(met, 0.6))
        assert not _compensation_wins(rep(met, 0.6 + SHARE_GAIN / 2), rep(met, 0.6))


@pytest.mark.parametrize("plain_first", [True, False])
@pytest.mark.parametrize("comp_share", [0.8, 0.96])
@pytest.mark.parametrize(("full_met", "plain_met"), [(True, True), (False, False), (False, True)])
def test_the_default_competition_writes_what_won(
    monkeypatch, full_met, plain_met, comp_share, plain_first
):
    """Real searches with their verdicts overridden: the compensated search misses the
    criterion at 80% (or 96%) INT8 MACs, the plain one keeps 60% and meets it (or misses it
    too). A plain model that meets it is written; where both miss it the larger INT8 share
    wins. Where plain full INT8 misses the criterion on the search rows, the compensated
    search runs first (unless DEFAULT_PLAIN_FIRST), and the plain one after it, since the
    compensated one misses the criterion (even at 96% INT8, over 1 - SHARE_GAIN)."""
    import dataclasses
    import importlib

    from onnx2trt_lib.quant import api

    monkeypatch.setattr(api, "DEFAULT_PLAIN_FIRST", plain_first)
    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")  # not the function
    real = protect_module.protect
    seen = []

    def verdict(source, options, data, **kw):
        compensated = bool(kw.get("weights"))
        if kw.get("search", True):
            seen.append(compensated)
        rep = real(source, options, data, **kw)
        met = False if compensated else plain_met if kw.get("search", True) else full_met
        share = comp_share if compensated else 0.6
        return dataclasses.replace(rep, met=met, int8_mac_share_after=share)

    monkeypatch.setattr(protect_module, "protect", verdict)
    model, amax, calib = _background_case()
    got = quantize(model, amax, data=calib)
    assert seen == ([False, True] if full_met or plain_first else [True, False])
    assert got.protection.met == plain_met
    assert got.protection.int8_mac_share_after == (0.6 if plain_met else comp_share)
    word = "dropped" if plain_met else "kept"
    assert any(n.startswith(f"compensation {word}") for n in got.notes), got.notes


def test_exposed_tensors_in_parts_side_by_side_are_those_of_one_run(background):
    """tensor_batches cuts a feed's rows into parts run side by side: the values are the bytes
    of one run of the whole feed (and of ONNX Runtime's own run)."""
    from onnx2trt_lib.quant._stats import tensor_batches

    model, _, calib, _, _ = background
    names = ["r1", "f", "y"]
    whole = list(tensor_batches(model, calib, names, workers=1))
    parts = list(tensor_batches(model, calib, names, workers=2))
    exposed = run(model, calib, extra_outputs=names)
    for i, (a, b) in enumerate(zip(whole, parts, strict=True)):
        for name in names:
            assert b[name].shape == a[name].shape
            np.testing.assert_array_equal(b[name], a[name])
            np.testing.assert_array_equal(a[name], exposed[name][i])


def test_layers_are_summed_and_solved_side_by_side_on_one_blas_thread(
    background, no_check, monkeypatch
):
    """compensate sums and solves its layers WORKERS at a time, numpy's BLAS held to one thread
    (OpenBLAS's own threads stall whenever another process holds a core): the same weights and
    biases, bit for bit, as one layer at a time."""
    from threadpoolctl import threadpool_info

    from onnx2trt_lib.quant import compensate as comp

    model, _, calib, _, ranges = background
    slotted, slots = bias_slots(model, quantized_layers(insert_qdq(model, ranges=ranges)[0]))
    layers = quantized_layers(insert_qdq(slotted, ranges=ranges)[0])
    threads = []
    add = comp._Sums.add

    def recording(self, *args, **kwargs):
        threads.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return add(self, *args, **kwargs)

    monkeypatch.setattr(comp._Sums, "add", recording)
    side = compensate(slotted, ranges, calib, layers, slots)
    assert threads and set(threads) == {1}
    monkeypatch.setattr(comp, "WORKERS", 1)
    one = compensate(slotted, ranges, calib, layers, slots)
    assert side[1].keys() == one[1].keys() and side[1]
    for fixes_side, fixes_one in zip(side[:2], one[:2], strict=True):
        for name, fix in fixes_side.items():
            np.testing.assert_array_equal(fix.corrected, fixes_one[name].corrected)


@pytest.mark.parametrize(("plain_met", "plain_share"), [(True, 0.99), (True, 0.6), (False, 0.6)])
def test_the_compensated_search_gives_way_to_an_enough_plain_one(
    monkeypatch, plain_met, plain_share
):
    """Compensated first (plain full INT8 misses the search rows), with its verdicts overridden:
    where its first repair does not settle it (asked through give_way) the plain search runs
    then. Plain meeting the criterion at >= 1 - SHARE_GAIN INT8 is written and the compensated
    search stops there; otherwise the compensated one goes on and the competition decides as
    before, without running the plain search a second time."""
    import dataclasses
    import importlib

    from onnx2trt_lib.quant import api

    monkeypatch.setattr(api, "DEFAULT_PLAIN_FIRST", False)
    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")  # not the function
    real = protect_module.protect
    seen, asked = [], []

    def verdict(source, options, data, **kw):
        compensated = bool(kw.get("weights"))
        searching = kw.get("search", True)
        if searching:
            seen.append(compensated)
        way = kw.pop("give_way", None)
        if compensated and way is not None:
            asked.append(way())
            if asked[-1]:  # stopped: nothing kept, not met
                rep = real(source, options, data, **{**kw, "search": False})
                return dataclasses.replace(rep, met=False, excluded=())
        rep = real(source, options, data, **kw)
        met = False if compensated else plain_met if searching else False
        share = 0.8 if compensated else plain_share
        return dataclasses.replace(rep, met=met, int8_mac_share_after=share)

    monkeypatch.setattr(protect_module, "protect", verdict)
    model, amax, calib = _background_case()
    got = quantize(model, amax, data=calib)
    enough = plain_met and plain_share >= 1 - api.SHARE_GAIN
    assert seen == [True, False] and asked == [enough]  # the plain search runs once
    assert got.protection.met == plain_met
    wins_plain = plain_met  # else both miss it: 80% compensated beats 60% plain
    assert got.protection.int8_mac_share_after == (plain_share if wins_plain else 0.8)
    if enough:
        assert any(n.startswith("compensation dropped: its first repair") for n in got.notes)
    else:
        word = "dropped" if wins_plain else "kept"
        assert any(n.startswith(f"compensation {word}: its search") for n in got.notes)
