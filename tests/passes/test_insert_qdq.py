"""insert-qdq: placement, scales against a plain numpy reference, exclusions, idempotence, TensorRT-RTX."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.errors import PassError
from onnx2trt_lib.passes import PassManager
from onnx2trt_lib.passes.insert_qdq import InsertQdqPass


def _fake_quant(x: np.ndarray, scale: np.ndarray | float, axis: int | None = None) -> np.ndarray:
    """Plain reference: round-half-even(x / s) clipped to [-128, 127], times s."""
    s = np.asarray(scale, np.float32)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    return (np.clip(np.rint(x / s), -128, 127) * s).astype(np.float32)


def _mixed_model(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Conv -> Relu -> ConvTranspose -> Conv (+ residual Add) -> Flatten -> Gemm(transB=0) -> MatMul."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.standard_normal((4, 2, 3, 3)),
        "b1": rng.standard_normal(4),
        "wt": rng.standard_normal((4, 3, 2, 2)),  # ConvTranspose: [C_in, C_out, k, k]
        "w2": rng.standard_normal((3, 3, 3, 3)) * [[[[1.0]]], [[[5.0]]], [[[0.1]]]],
        "wg": rng.standard_normal((3 * 8 * 8, 6)),
        "bg": rng.standard_normal(6),
        "wm": rng.standard_normal((6, 5)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("ConvTranspose", ["r1", "wt"], ["t1"], name="deconv", strides=[2, 2]),
        helper.make_node("Conv", ["t1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "t1"], ["s"], name="residual"),
        helper.make_node("Flatten", ["s"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["g"], name="gemm"),
        helper.make_node("MatMul", ["g", "wm"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _ranges(model: onnx.ModelProto, x: np.ndarray, run_ort_outputs) -> dict[str, float]:
    names = [o for n in model.graph.node for o in n.output]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for name in names:
        if name != "y":
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    values = run_ort_outputs(exposed, {"x": x})
    return {"x": float(np.abs(x).max()), **{k: float(np.abs(v).max()) for k, v in values.items()}}


@pytest.fixture
def run_ort_outputs():
    """Outputs by name from ONNX Runtime on CPU, optimisations off."""
    ort = pytest.importorskip("onnxruntime")

    def run(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        sess = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds), strict=True))

    return run


def _quantize(model: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, object]:
    out, report = PassManager([InsertQdqPass(**options)]).run(model)
    return out, report.records[0].result


def _qdq_of(
    model: onnx.ModelProto, consumer: str, slot: int
) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    producers = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == consumer)
    dq = producers.get(node.input[slot])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    return producers[dq.input[0]], dq


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_placement_and_scales_follow_trt_form(run_ort_outputs):
    model = _mixed_model()
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4)).astype(np.float32)
    ranges = _ranges(model, x, run_ort_outputs)
    out, res = _quantize(model, ranges=ranges)
    assert res.modified and not res.skipped
    assert res.counts["quantized_nodes"] == 5 and res.counts["weight_qdq"] == 5
    assert res.counts["residual_add_inputs"] == 1
    expect_axis = {"conv1": 0, "deconv": 1, "conv2": 0, "gemm": 1, "matmul": 1}
    for name, axis in expect_axis.items():
        q, dq = _qdq_of(out, name, 1)
        weight = _init(out, q.input[0])
        reference = (
            np.abs(np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)).max(axis=1) / 127
        )
        np.testing.assert_allclose(_init(out, q.input[1]), reference, rtol=1e-6)
        assert {a.name: a.i for a in q.attribute} == {"axis": axis}
        zero = _init(out, q.input[2])
        assert zero.dtype == np.int8 and not zero.any()
        # activations: per tensor, scale = amax / 127, int8 zero point 0
        qa, _ = _qdq_of(out, name, 0)
        assert _init(out, qa.input[1]).shape == ()
        np.testing.assert_allclose(_init(out, qa.input[1]), ranges[qa.input[0]] / 127, rtol=1e-6)
        assert _init(out, qa.input[2]).dtype == np.int8
    # biases stay float initializers read directly by the op
    assert next(n for n in out.graph.node if n.name == "conv1").input[2] == "b1"
    assert next(n for n in out.graph.node if n.name == "gemm").input[2] == "bg"
    # residual Add: the identity input (t1) is quantized, the Conv output (c2) is not
    add = next(n for n in out.graph.node if n.name == "residual")
    assert add.input[0] == "c2" and _qdq_of(out, "residual", 1) is not None
    # the deconv output t1 feeds conv2 and the Add through one shared Q/DQ pair
    assert (
        sum(1 for n in out.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "t1") == 1
    )
    onnx.checker.check_model(out, full_check=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerics_match_numpy_fake_quant(seed, run_ort_outputs):
    """Q/DQ Conv == float Conv on numpy-fake-quantized input and per-channel weights."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((5, 3, 3, 3)) * rng.uniform(0.01, 3, (5, 1, 1, 1))).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    x = (rng.standard_normal((2, 3, 6, 6)) * 2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    amax = float(np.abs(x).max()) * 0.7  # clip some values on purpose
    out, _ = _quantize(model, ranges={"x": amax})
    got = run_ort_outputs(out, {"x": x})["y"]
    w_ref = _fake_quant(w, np.abs(w).reshape(5, -1).max(1) / 127, axis=0)
    ref_model = onnx.ModelProto()
    ref_model.CopyFrom(model)
    ref_model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w_ref, "w"))
    want = run_ort_outputs(ref_model, {"x": _fake_quant(x, np.float32(amax / 127))})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_second_run_is_a_no_op(run_ort_outputs):
    model = _mixed_model()
    x = np.random.default_rng(2).standard_normal((2, 2, 4, 4)).astype(np.float32)
    out, _ = _quantize(model, ranges=_ranges(model, x, run_ort_outputs))
    again, res = _quantize(out, ranges=_ranges(model, x, run_ort_outputs))
    assert not res.modified and again is out


def test_no_match_leaves_graph_alone():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, res = _quantize(model, ranges={"x": 1.0})
    assert not res.modified and out is model


def test_missing_range_leaves_node_float_and_reports_it(run_ort_outputs):
    model = _mixed_model()
    x = np.random.default_rng(3).standard_normal((2, 2, 4, 4)).astype(np.float32)
    ranges = _ranges(model, x, run_ort_outputs)
    del ranges["r1"]
    out, res = _quantize(model, ranges=ranges)
    skipped = {s.node: s.reason for s in res.skipped}
    assert "deconv" in skipped and "'r1'" in skipped["deconv"]
    assert _qdq_of(out, "deconv", 0) is None and _qdq_of(out, "deconv", 1) is None
    assert _qdq_of(out, "conv1", 0) is not None
    run_ort_outputs(out, {"x": x})  # still a valid model


def test_exclusions_by_node_tensor_and_op_type(run_ort_outputs):
    model = _mixed_model()
    x = np.random.default_rng(4).standard_normal((2, 2, 4, 4)).astype(np.float32)
    ranges = _ranges(model, x, run_ort_outputs)
    out, res = _quantize(
        model,
        ranges=ranges,
        exclude_nodes=["conv2"],
        exclude_tensors=["g"],
        op_types=["Conv", "MatMul", "Gemm"],
    )
    assert _qdq_of(out, "conv2", 0) is None and _qdq_of(out, "conv2", 1) is None
    assert _qdq_of(out, "deconv", 0) is None  # op type not selected
    assert _qdq_of(out, "matmul", 0) is None  # its input tensor g is excluded
    assert _qdq_of(out, "conv1", 0) is not None and _qdq_of(out, "gemm", 0) is not None
    assert _qdq_of(out, "residual", 1) is None  # conv2 is float: no residual fusion to enable
    reasons = {s.node: s.reason for s in res.skipped}
    assert reasons["conv2"] == "excluded by name" and "'g' is excluded" in reasons["matmul"]


def test_old_opset_is_refused_with_a_fix():
    model = _mixed_model(opset=11)
    with pytest.raises(PassError, match="version_converter"):
        InsertQdqPass(ranges={"x": 1.0}).run(gs.import_onnx(model))


def test_bad_ranges_are_refused():
    with pytest.raises(PassError, match="not finite"):
        InsertQdqPass(ranges={"x": float("inf")})


@pytest.mark.trt
def test_tensorrt_rtx_parses_and_builds(rtx_parse_and_build, run_ort_outputs):
    model = _mixed_model()
    x = np.random.default_rng(5).standard_normal((2, 2, 4, 4)).astype(np.float32)
    out, _ = _quantize(model, ranges=_ranges(model, x, run_ort_outputs))
    ok, errors = rtx_parse_and_build(out)
    assert ok, errors


def _float16_matmul(opset: int) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float16)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 4])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def test_float16_below_opset_19_is_refused_with_a_fix():
    """QuantizeLinear takes float16 only from opset 19: an older float16 model would not load in ORT."""
    with pytest.raises(
        PassError, match=r"float16 .* opset 17 is below 19.*convert_version\(model, 19\)"
    ):
        _quantize(_float16_matmul(17), ranges={"x": 3.0})


def test_float16_at_opset_19_quantizes_and_runs(run_ort_outputs):
    model = _float16_matmul(19)
    out, res = _quantize(model, ranges={"x": 3.0})
    assert res.counts["quantized_nodes"] == 1
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(1).uniform(-3, 3, (2, 4)).astype(np.float16)
    w = _init(model, "w")
    scale_w = np.abs(w.astype(np.float32)).max(axis=0) / 127
    ref = _fake_quant(x.astype(np.float32), 3.0 / 127) @ _fake_quant(
        w.astype(np.float32), scale_w, axis=1
    )
    got = run_ort_outputs(out, {"x": x})["y"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(
        got.astype(np.float32), ref, atol=0.1
    )  # float16 scales: a bin may flip


def test_weight_shared_by_matmul_and_gemm_gets_each_consumers_axis(run_ort_outputs):
    """W [4, 6]: MatMul's output channels are its columns (axis 1), Gemm(transB=1)'s its rows (axis 0)."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
            helper.make_node("Gemm", ["x2", "w"], ["y2"], name="gemm", transB=1),
        ],
        "shared",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("x2", TensorProto.FLOAT, [2, 6]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2, 4]),
        ],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    out, res = _quantize(model, ranges={"x": 3.0, "x2": 3.0})
    assert res.counts["weight_qdq"] == 2
    onnx.checker.check_model(out, full_check=True)
    assert [a.i for a in _qdq_of(out, "mm", 1)[1].attribute if a.name == "axis"] == [1]
    assert [a.i for a in _qdq_of(out, "gemm", 1)[1].attribute if a.name == "axis"] == [0]
    feeds = {
        "x": rng.uniform(-3, 3, (2, 4)).astype(np.float32),
        "x2": rng.uniform(-3, 3, (2, 6)).astype(np.float32),
    }
    got = run_ort_outputs(out, feeds)
    w_cols = _fake_quant(w, np.abs(w).max(axis=0) / 127, axis=1)
    w_rows = _fake_quant(w, np.abs(w).max(axis=1) / 127, axis=0)
    np.testing.assert_allclose(got["y"], _fake_quant(feeds["x"], 3.0 / 127) @ w_cols, atol=1e-5)
    np.testing.assert_allclose(got["y2"], _fake_quant(feeds["x2"], 3.0 / 127) @ w_rows.T, atol=1e-5)
    assert not _quantize(out, ranges={"x": 3.0, "x2": 3.0})[1].modified


def _zero_channel_model() -> tuple[onnx.ModelProto, np.ndarray]:
    """_mixed_model with conv1's output channel 1 all zero (a pruned filter) and its input."""
    model = _mixed_model(seed=3)
    w1 = next(i for i in model.graph.initializer if i.name == "w1")
    values = numpy_helper.to_array(w1).copy()
    values[1] = 0.0
    w1.CopyFrom(numpy_helper.from_array(values, "w1"))
    return model, np.random.default_rng(3).standard_normal((2, 2, 4, 4)).astype(np.float32)


def test_all_zero_weight_channel_and_zero_range_get_scale_one(run_ort_outputs):
    """A scale of 0 is invalid ONNX (TensorRT refuses it); an all-zero channel quantizes to 0 at any scale."""
    model, x = _zero_channel_model()
    ranges = _ranges(model, x, run_ort_outputs)
    ranges["r1"] = 0.0  # an activation that was all zero during calibration
    out, res = _quantize(model, ranges=ranges)
    assert res.modified and not res.skipped
    q, _ = _qdq_of(out, "conv1", 1)
    scale = _init(out, q.input[1])
    assert scale[1] == 1.0 and np.all(scale > 0)
    qa, _ = _qdq_of(out, "deconv", 0)
    assert qa.input[0] == "r1" and _init(out, qa.input[1]) == 1.0
    for node in out.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert np.all(_init(out, node.input[1]) > 0), node.name
    assert np.all(np.isfinite(run_ort_outputs(out, {"x": x})["y"]))


@pytest.mark.trt
def test_all_zero_weight_channel_parses_and_builds_on_rtx(rtx_parse_and_build, run_ort_outputs):
    model, x = _zero_channel_model()
    out, _ = _quantize(model, ranges=_ranges(model, x, run_ort_outputs))
    ok, errors = rtx_parse_and_build(out)
    assert ok, errors


def test_per_channel_axis_only_where_the_weight_has_output_channels():
    """A batched MatMul weight [B, K, N] or a 2-D input of another op gets one per-tensor scale."""
    from onnx2trt_lib.passes.insert_qdq import weight_axis

    matmul, add = gs.Node("MatMul"), gs.Node("Add")
    assert weight_axis(matmul, 1, (4, 5)) == 1  # [K, N]: N output channels
    assert weight_axis(matmul, 1, (2, 4, 5)) is None
    assert weight_axis(add, 1, (4, 5)) is None
    assert weight_axis(matmul, 0, (4, 5)) is None  # the activation side


def _conv_plus_computed_bias(bias_from_input: bool) -> onnx.ModelProto:
    """Conv -> Add(conv, Reshape(bias, shape)): the converter's form of Paddle's broadcast bias.

    With `bias_from_input`, the Reshape reads a graph input instead: a real second branch.
    """
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["bias", "shape"], ["bias_4d"], name="reshape"),
        helper.make_node("Add", ["c", "bias_4d"], ["y"], name="add"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])]
    inits = [w, shape]
    if bias_from_input:
        inputs.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4]))
    else:
        nodes.insert(
            0,
            helper.make_node(
                "Constant",
                [],
                ["bias"],
                value=numpy_helper.from_array(rng.standard_normal(4).astype(np.float32)),
            ),
        )
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_add_of_a_bias_computed_from_constants_is_not_a_residual_branch(run_ort_outputs):
    model = _conv_plus_computed_bias(bias_from_input=False)
    x = np.random.default_rng(1).standard_normal((1, 2, 8, 8)).astype(np.float32)
    fixed, result = _quantize(model, ranges={"x": float(np.abs(x).max())})
    assert result.modified and not [s for s in result.skipped if "residual" in s.reason]
    got = run_ort_outputs(fixed, {"x": x})["y"]
    want = run_ort_outputs(model, {"x": x})["y"]
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()  # INT8 conv, float bias


def test_add_of_a_branch_fed_by_data_still_needs_its_range():
    model = _conv_plus_computed_bias(bias_from_input=True)
    _, result = _quantize(model, ranges={"x": 1.0})
    reasons = [s.reason for s in result.skipped]
    assert any("residual input: no range for input 'bias_4d'" in r for r in reasons), reasons
