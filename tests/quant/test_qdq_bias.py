"""Bias correction of the Q/DQ model against a plain numpy fake-quant forward pass.

Each INT8 layer's new bias is its bias minus the per-channel mean of (its output in the Q/DQ
model - its output in FP32), the Q/DQ model carrying the corrections of the previous pass
(Jacobi passes); INT8 is symmetric: activations per tensor (scale amax / 127), weights per
output channel (max |w| / 127), round half to even. Layers kept in float keep their bias.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.quant.accuracy import run
from onnx2trt_lib.quant.api import quantize
from onnx2trt_lib.quant.qdq import insert_qdq
from onnx2trt_lib.quant.qdq_bias import bias_slots, correct_biases, local_biases, with_biases
from onnx2trt_lib.quant.switch import SwitchSession, quantized_layers

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def exact_ort(monkeypatch):
    """Everything run without ONNX Runtime's graph optimisations: its basic level already
    moves Conv outputs by ~1e-4 (a few parts in 1e4), which flips a rounding downstream now and
    then; unoptimised it computes the Q/DQ graph as written, which the numpy pass reproduces."""
    import onnxruntime as ort

    from onnx2trt_lib.quant import _stats
    from onnx2trt_lib.quant.accuracy import _with_outputs

    def session(model, *, extra_outputs=(), threads=None):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        model = _with_outputs(model, extra_outputs) if extra_outputs else model
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    from onnx2trt_lib.quant import accuracy, switch

    for module in (_stats, accuracy, switch):
        monkeypatch.setattr(module, "session", session)


TIES: list[float] = []  # distance of every quantized activation to a rounding tie, in steps
NEAR_TIE = 1e-4  # closer than this, float32 (ORT) vs float64 (numpy) may round either way


LAYERS = ("conv1", "conv2", "gemm", "matmul")
OUTPUTS = {"conv1": "y1", "conv2": "y2", "gemm": "y3", "matmul": "m"}


def np_conv(x, w, b, pad):
    """Plain NCHW convolution, stride 1, symmetric pads."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o, _, kh, kw = w.shape
    ho, wo = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    out = np.zeros((x.shape[0], o, ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i : i + ho, j : j + wo], w[:, :, i, j])
    return out + b.reshape(1, -1, 1, 1)


def q_act(x, amax):
    """QuantizeLinear to int8 (zero point 0) saturates to [-128, 127], then DequantizeLinear."""
    scale = np.float32(amax / 127)
    v = x.astype(np.float32) / scale
    TIES.append(float(np.abs(np.abs(v - np.floor(v)) - 0.5).min()))
    return np.clip(np.rint(v), -128, 127).astype(np.float64) * scale


def q_weight(w, axis):
    moved = np.moveaxis(w.astype(np.float64), axis, 0)
    amax = np.abs(moved).reshape(len(moved), -1).max(1)
    scale = np.where(amax > 0, amax / 127, 1.0).astype(np.float32).astype(np.float64)
    shape = (-1,) + (1,) * (moved.ndim - 1)
    q = np.clip(np.rint(moved / scale.reshape(shape)), -127, 127) * scale.reshape(shape)
    return np.moveaxis(q, 0, axis)


def forward(a, x, biases, ranges=None, int8=()):
    """Layer outputs (before the bias Add for matmul) of the model below, float64; layers in
    `int8` see quantized input and weights."""
    w = {k: v.astype(np.float64) for k, v in a.items()}

    def inp(layer, t, name):
        return q_act(t, ranges[name]) if layer in int8 else t

    def wt(layer, k, axis):
        return q_weight(w[k], axis) if layer in int8 else w[k]

    y1 = np_conv(inp("conv1", x, "x"), wt("conv1", "w1", 0), biases["conv1"], 1)
    r1 = np.maximum(y1, 0)
    y2 = np_conv(inp("conv2", r1, "r1"), wt("conv2", "w2", 0), biases["conv2"], 0)
    f = np.maximum(y2, 0).reshape(len(x), -1)
    y3 = inp("gemm", f, "f") @ wt("gemm", "w3", 0).T + biases["gemm"]  # transB: w3 is [4, K]
    m = inp("matmul", np.maximum(y3, 0), "r3") @ wt("matmul", "w4", 1)
    return {"conv1": y1, "conv2": y2, "gemm": y3, "matmul": m}


def make_model(rng, c, c1):
    """x -> Conv(b1) -> Relu -> Conv(no bias) -> Relu -> Flatten -> Gemm(C, transB) -> Relu ->
    MatMul -> Add(b4)."""
    k = 5 * 4 * 4
    a = {
        "w1": rng.standard_normal((c1, c, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(c1).astype(np.float32),
        "w2": rng.standard_normal((5, c1, 1, 1)).astype(np.float32),
        "w3": (rng.standard_normal((4, k)) * 0.3).astype(np.float32),
        "c3": rng.standard_normal(4).astype(np.float32),
        "w4": rng.standard_normal((4, 3)).astype(np.float32),
        "b4": rng.standard_normal(3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["y1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y2"], name="conv2"),
        helper.make_node("Relu", ["y2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "c3"], ["y3"], name="gemm", transB=1),
        helper.make_node("Relu", ["y3"], ["r3"]),
        helper.make_node("MatMul", ["r3", "w4"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b4"], ["y"], name="bias_add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(v, k) for k, v in a.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), a


def setup(seed, c, c1, clip):
    rng = np.random.default_rng(seed)
    model, a = make_model(rng, c, c1)
    feeds = [{"x": (rng.standard_normal((n, c, 4, 4)) + 0.7).astype(np.float32)} for n in (5, 6)]
    x = np.concatenate([f["x"] for f in feeds]).astype(np.float64)
    orig = {"conv1": a["b1"], "conv2": np.zeros(5), "gemm": a["c3"], "matmul": a["b4"]}
    fp = forward(a, x, orig)
    acts = {
        "x": x,
        "r1": np.maximum(fp["conv1"], 0),
        "f": np.maximum(fp["conv2"], 0).reshape(len(x), -1),
        "r3": np.maximum(fp["gemm"], 0),
    }
    ranges = {k: float(np.abs(v).max()) * clip + 1e-3 for k, v in acts.items()}
    return model, a, feeds, x, orig, fp, ranges


def expected(a, x, orig, fp, ranges, passes, int8=LAYERS):
    """The corrected biases by the numpy forward pass; hypothesis skips inputs where some
    activation lands within NEAR_TIE of a rounding tie (either rounding is right there)."""
    TIES.clear()
    biases = {k: v.astype(np.float64) for k, v in orig.items()}
    means = {
        k: v.reshape(-1, v.shape[1]).mean(0) if v.ndim == 2 else v.mean((0, 2, 3))
        for k, v in fp.items()
    }
    for _ in range(passes):
        q = forward(a, x, biases, ranges, int8)
        for k in int8:
            got = q[k].mean(0) if q[k].ndim == 2 else q[k].mean((0, 2, 3))
            biases[k] = (biases[k] - (got - means[k])).astype(np.float32).astype(np.float64)
    assume(min(TIES, default=1.0) > NEAR_TIE)
    return biases


def expected_local(a, x, orig, fp, ranges, int8=LAYERS):
    """Each layer's own error: its bias minus the mean of (output with only it INT8, its input
    the FP32 one) - FP32 output."""
    TIES.clear()
    out = dict(orig)
    for k in int8:
        q = forward(a, x, orig, ranges, [k])[k]
        axes = 0 if q.ndim == 2 else (0, 2, 3)
        out[k] = orig[k] - (q.mean(axes) - fp[k].mean(axes))
    assume(min(TIES, default=1.0) > NEAR_TIE)
    return out


def written_biases(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return {
        "conv1": inits[nodes["conv1"].input[2]],
        "conv2": inits[nodes["conv2"].input[2]] if len(nodes["conv2"].input) > 2 else np.zeros(5),
        "gemm": inits[nodes["gemm"].input[2]],
        "matmul": inits[nodes["bias_add"].input[1]],
    }


def close(got, want):
    for k in want:
        tol = 1e-3 * (1 + np.abs(want[k]).max())
        np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=tol, err_msg=k)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    c=st.integers(1, 3),
    c1=st.integers(1, 4),
    clip=st.sampled_from([1.0, 0.6]),
    passes=st.sampled_from([1, 2, 3]),
)
def test_jacobi_passes_match_a_numpy_fake_quant_forward(seed, c, c1, clip, passes):
    model, a, feeds, x, orig, fp, ranges = setup(seed, c, c1, clip)
    options = {"ranges": ranges}
    slotted, slots = bias_slots(model, LAYERS)
    assert set(slots) == set(LAYERS)

    def build(m):
        return insert_qdq(m, **options)[0]

    fixes = correct_biases(slotted, model, build, feeds, slots, passes=passes)
    got = {k: fixes[k].corrected for k in LAYERS}
    close(got, expected(a, x, orig, fp, ranges, passes))
    for k in LAYERS:
        np.testing.assert_array_equal(fixes[k].original, orig[k].astype(np.float32))


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    c=st.integers(1, 3),
    c1=st.integers(1, 4),
    clip=st.sampled_from([1.0, 0.6]),
)
def test_local_corrections_match_a_numpy_fake_quant_forward(seed, c, c1, clip):
    model, a, feeds, x, orig, fp, ranges = setup(seed, c, c1, clip)
    slotted, slots = bias_slots(model, LAYERS)
    fixes = local_biases(slotted, ranges, feeds, slots)
    close({k: fixes[k].corrected for k in LAYERS}, expected_local(a, x, orig, fp, ranges))
    for k in LAYERS:
        np.testing.assert_array_equal(fixes[k].original, orig[k].astype(np.float32))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), float_layer=st.sampled_from(LAYERS))
def test_quantize_writes_corrections_only_for_int8_layers(seed, float_layer):
    """quantize(bias_correction=True): the INT8 layers carry their own-error corrections (all 11
    rows: fewer than protection's held-out split), the float one its original bias; without
    the option every bias is the original."""
    model, a, feeds, x, orig, fp, ranges = setup(seed, 2, 3, 0.8)
    plain = quantize(
        model, ranges, data=feeds, protect=False, exclude=[float_layer], compensate=False
    )
    close(written_biases(plain.model), orig)
    res = quantize(
        model, ranges, data=feeds, protect=False, exclude=[float_layer], bias_correction=True
    )
    int8 = [k for k in LAYERS if k != float_layer]
    want = expected_local(a, x, orig, fp, ranges, int8)
    got = written_biases(res.model)
    close(got, want)
    np.testing.assert_array_equal(got[float_layer], orig[float_layer].astype(np.float32))
    assert set(quantized_layers(res.model)) == set(int8)


def test_switch_model_picks_corrected_or_original_bias():
    """For every mix of float layers, the switch model with biases answers like the Q/DQ model
    written with corrected biases on its INT8 layers only; the all-float mix is the FP32 model."""
    model, a, feeds, x, orig, fp, ranges = setup(3, 2, 3, 0.8)
    options = {"ranges": ranges}
    slotted, slots = bias_slots(model, LAYERS)
    fixes = local_biases(slotted, ranges, feeds, slots)
    full = insert_qdq(with_biases(slotted, fixes, LAYERS), **options)[0]
    switch = SwitchSession(full, quantized_layers(full), ranges, (), fixes)
    fp32 = run(model, feeds)["y"]
    for r in range(len(LAYERS) + 1):
        for floats in itertools.combinations(LAYERS, r):
            int8 = [k for k in LAYERS if k not in floats]
            written = insert_qdq(
                with_biases(slotted, fixes, int8), exclude_nodes=list(floats), **options
            )[0]
            want = np.concatenate(run(written, feeds)["y"])
            got = switch.run(int8, feeds)["y"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            if not int8:
                np.testing.assert_allclose(got, np.concatenate(fp32), rtol=1e-5, atol=1e-5)


def test_protection_with_bias_correction_keeps_float_layers_exact(digits):
    """On the digits CNN with protection (conv3's input range cut to a tenth, so protection keeps
    it in float): every layer kept in float has its original bias in the written model, the
    INT8 ones their corrected one."""
    model, data = digits
    from digits_cnn import max_abs_ranges

    ranges = max_abs_ranges(model, data["x_calib"])
    ranges["r2"] *= 0.1
    name = model.graph.input[0].name
    feeds = [{name: data["x_calib"][i : i + 50]} for i in range(0, 200, 50)]
    res = quantize(model, ranges, data=feeds, bias_correction=True)
    orig = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    new = {i.name: numpy_helper.to_array(i) for i in res.model.graph.initializer}
    floats = {e.node for e in res.protection.excluded}
    nodes = {n.name: n for n in res.model.graph.node}
    int8 = set(quantized_layers(res.model))
    changed = 0
    for name_, node in nodes.items():
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        b = node.input[2]
        if name_ in floats:
            np.testing.assert_array_equal(new[b], orig.get(b, np.zeros_like(new[b])))
        elif name_ in int8:
            changed += not np.array_equal(new[b], orig.get(b, np.zeros_like(new[b])))
    assert floats and changed == len(int8) > 0


def test_biases_held_in_constant_nodes_are_found_and_the_function_kept():
    """paddle2onnx writes weights and biases as Constant nodes: bias_slots turns them into
    initializers (same FP32 outputs) and finds every layer."""
    model, a, feeds, x, orig, fp, ranges = setup(5, 2, 3, 1.0)
    as_nodes = onnx.ModelProto()
    as_nodes.CopyFrom(model)
    consts = [
        helper.make_node("Constant", [], [i.name], value=i) for i in as_nodes.graph.initializer
    ]
    del as_nodes.graph.initializer[:]
    nodes = consts + list(as_nodes.graph.node)
    del as_nodes.graph.node[:]
    as_nodes.graph.node.extend(nodes)
    slotted, slots = bias_slots(as_nodes, LAYERS)
    assert set(slots) == set(LAYERS)
    np.testing.assert_allclose(
        np.concatenate(run(slotted, feeds)["y"]), np.concatenate(run(model, feeds)["y"]), 1e-6
    )


def test_cli_bias_correction_needs_qdq_and_reports(tmp_path):
    """calibrate --bias-correction without --qdq: one-line error, nothing written; with --qdq
    the JSON notes say how many layers were corrected and the written biases moved."""
    import json

    from click.testing import CliRunner

    from onnx2trt_lib.cli.main import cli

    model, a, feeds, x, orig, fp, ranges = setup(7, 2, 3, 1.0)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    cache, out = tmp_path / "c.cache", tmp_path / "q.onnx"
    base = ["calibrate", str(path), "--data", str(tmp_path / "x.npy"), "-o", str(cache)]
    res = CliRunner().invoke(cli, [*base, "--bias-correction"])
    assert res.exit_code != 0 and "--qdq" in res.output and "Traceback" not in res.output
    assert not cache.exists()
    res = CliRunner().invoke(
        cli, [*base, "--qdq", str(out), "--bias-correction", "--no-protect", "--json"]
    )
    assert res.exit_code == 0, res.output
    notes = json.loads(res.output)["qdq"]["notes"]
    assert any("bias correction: 4 layer(s)" in n for n in notes), notes
    got = written_biases(onnx.load(out))
    assert all(not np.array_equal(got[k], orig[k].astype(np.float32)) for k in LAYERS)
    from test_prepare_cli import _rtx_builds

    fixed = onnx.load(out)  # TensorRT-RTX takes the added Conv bias and the moved ones
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # no profile needed
    assert _rtx_builds(fixed)
