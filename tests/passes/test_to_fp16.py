"""to-fp16: FP16 outputs within FP16 tolerance, kept nodes, Casts only at boundaries, idempotence, TensorRT-RTX."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.passes import PassManager
from onnx2trt_lib.passes.to_fp16 import ConvertToFp16Pass


def _model(seed: int = 0, *, big: float | None = None) -> onnx.ModelProto:
    """Conv -> Relu -> Resize(scales) -> Mul(const) -> Cast(int->float) path -> ReduceMean -> Gemm -> Softmax."""
    rng = np.random.default_rng(seed)
    mul = np.full((1, 4, 1, 1), 0.5 if big is None else big, np.float32)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        numpy_helper.from_array(mul, "k"),
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "wg"),
        numpy_helper.from_array(np.array([1, 3], np.int64), "one3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Resize", ["r", "", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("Mul", ["up", "k"], ["m"], name="mul"),
        helper.make_node("ReduceMean", ["m"], ["p"], name="pool", axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["p", "wg"], ["g"], name="gemm"),
        helper.make_node(
            "ConstantOfShape",
            ["one3"],
            ["bias"],
            name="cos",
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25]),
        ),
        helper.make_node("Add", ["g", "bias"], ["gb"], name="add_bias"),
        helper.make_node("Softmax", ["gb"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "fp16_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 3]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _convert(model: onnx.ModelProto, **options):
    out, report = PassManager([ConvertToFp16Pass(**options)]).run(model)
    return out, report.records[0].result


@pytest.fixture
def run_ort():
    ort = pytest.importorskip("onnxruntime")

    def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        # no graph optimisation: ORT would otherwise fold Cast pairs and compute in float32
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        dtype = np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, {"x": x.astype(dtype)}), strict=True))

    return run


def _cast_chains(model: onnx.ModelProto) -> list[str]:
    producers = {o: n for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Cast" and getattr(producers.get(n.input[0]), "op_type", "") == "Cast"
    ]


def _elem(model: onnx.ModelProto, name: str) -> int:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    inits = {i.name: i.data_type for i in inferred.graph.initializer}
    if name in inits:
        return inits[name]
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return next(v.type.tensor_type.elem_type for v in infos if v.name == name)


FP16_RTOL = 2e-2  # ~20 ulps of FP16 at the outputs' scale, after a few layers of rounding


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**16), keep_io=st.booleans())
def test_fp16_outputs_close_to_fp32(seed, keep_io, run_ort):
    model = _model(seed)
    out, res = _convert(model, keep_io_types=keep_io)
    assert res.modified
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(seed).standard_normal((1, 3, 6, 6)).astype(np.float32)
    ref, got = run_ort(model, x), run_ort(out, x)
    from onnx.reference import (
        ReferenceEvaluator,  # computes in FP16 as written (ORT CPU may use float32)
    )

    x_in = x if keep_io else x.astype(np.float16)
    exact16 = dict(zip(["y", "g"], ReferenceEvaluator(out).run(None, {"x": x_in}), strict=True))
    for name in ref:
        assert got[name].dtype == exact16[name].dtype == (np.float32 if keep_io else np.float16)
        scale = float(np.abs(ref[name]).max())
        np.testing.assert_allclose(got[name].astype(np.float32), ref[name], atol=FP16_RTOL * scale)
        np.testing.assert_allclose(
            exact16[name].astype(np.float32), ref[name], atol=FP16_RTOL * scale
        )
    assert _cast_chains(out) == []
    casts = [n for n in out.graph.node if n.op_type == "Cast"]
    # keep_io: one Cast in (x) and one per output (y, g); else none
    assert len(casts) == (3 if keep_io else 0)
    assert _elem(out, "c") == TensorProto.FLOAT16
    assert (
        _elem(out, "scales") == TensorProto.FLOAT
    )  # Resize scales stay float32 (ONNX pins the type)


def test_second_run_is_a_no_op():
    for options in (
        {},
        {"keep_io_types": True},
        {"keep_ops": ["Softmax"]},
        {"keep_nodes": ["mul", "gemm"]},
    ):
        out, _ = _convert(_model(), **options)
        again, res = _convert(out, **options)
        assert not res.modified and again is out, options


def test_kept_nodes_sit_behind_boundary_casts_only(run_ort):
    model = _model(3)
    out, res = _convert(model, keep_nodes=["mul", "pool"], keep_ops=["Softmax"])
    kept = {s.node for s in res.skipped}
    assert kept == {"mul", "pool", "softmax"}
    assert _elem(out, "m") == TensorProto.FLOAT and _elem(out, "p") == TensorProto.FLOAT
    assert _elem(out, "r") == TensorProto.FLOAT16 and _elem(out, "g") == TensorProto.FLOAT16
    assert _cast_chains(out) == []
    # boundaries: up->mul (to 32), pool->gemm (to 16), gb->softmax (to 32), softmax->y output (to 16)
    assert sum(1 for n in out.graph.node if n.op_type == "Cast") == 4
    x = np.random.default_rng(3).standard_normal((1, 3, 6, 6)).astype(np.float32)
    ref, got = run_ort(model, x), run_ort(out, x)
    np.testing.assert_allclose(got["y"].astype(np.float32), ref["y"], atol=FP16_RTOL)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_large_initializer_keeps_its_node_float32(run_ort):
    model = _model(4, big=1e5)  # 1e5 does not fit FP16 (max 65504)
    out, res = _convert(model, keep_io_types=True)
    reasons = {s.node: s.reason for s in res.skipped}
    assert "initializer 'k'" in reasons["mul"]
    k = next(i for i in out.graph.initializer if i.name == "k")
    assert k.data_type == TensorProto.FLOAT
    x = np.random.default_rng(4).standard_normal((1, 3, 6, 6)).astype(np.float32)
    ref = run_ort(model, x)
    # ONNX Runtime CPU folds Cast pairs and computes many FP16 ops in float32, hiding overflow;
    # onnx's reference evaluator computes in FP16 as written
    from onnx.reference import ReferenceEvaluator

    got = dict(zip(["y", "g"], ReferenceEvaluator(out).run(None, {"x": x}), strict=True))
    with np.errstate(over="ignore"):
        assert not np.isfinite(
            got["g"]
        ).all()  # mul is float32 but its 1e5-scale output overflows pool in FP16
    # m overflows FP16 downstream of mul unless its consumers also stay float32: measured ranges do that
    out2, res2 = _convert(
        model, keep_io_types=True, ranges={"m": 3e5, "p": 2e5, "g": 1e5, "gb": 1e5}
    )
    kept = {s.node for s in res2.skipped}
    assert {"mul", "pool", "gemm", "add_bias"} <= kept
    got2 = dict(zip(["y", "g"], ReferenceEvaluator(out2).run(None, {"x": x}), strict=True))
    np.testing.assert_allclose(
        got2["g"], ref["g"], rtol=1e-2, atol=1e-2 * float(np.abs(ref["g"]).max())
    )


def test_activation_bound_is_configurable():
    _, res = _convert(_model(), ranges={"r": 100.0})
    assert not res.skipped
    _, res = _convert(_model(), ranges={"r": 100.0}, max_activation=50.0)
    assert {s.node for s in res.skipped} == {"relu", "resize"}


def test_float16_model_is_a_no_op():
    out, _ = _convert(_model())
    again, res = _convert(out)
    assert not res.modified


def test_constant_nodes_and_casts_are_converted(run_ort):
    nodes = [
        helper.make_node("Constant", [], ["c"], value_float=2.0),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["sf"], ["n"], keepdims=1),
        helper.make_node("Mul", ["x", "c"], ["x2"]),
        helper.make_node("Add", ["x2", "n"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "consts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    out, res = _convert(model)
    assert res.modified and not any(
        n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT for n in out.graph.node
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(run_ort(out, x)["y"], (x * 2 + 5).astype(np.float16))


@pytest.mark.trt
@pytest.mark.parametrize("keep_io", [False, True])
def test_tensorrt_rtx_parses_and_builds(keep_io, rtx_parse_and_build):
    out, _ = _convert(_model(), keep_io_types=keep_io, keep_nodes=["pool"])
    ok, errors = rtx_parse_and_build(out)
    assert ok, errors


def test_graph_import_untyped_tensors_get_types():
    """A model without value_info (types unknown to graph-surgeon) still converts."""
    model = _model()
    del model.graph.value_info[:]
    graph = gs.import_onnx(model)
    res = ConvertToFp16Pass().run(graph)
    assert res.modified and all(t.dtype is not None for n in graph.nodes for t in n.outputs)


def test_rerun_with_other_options_leaves_no_noop_or_chained_casts(run_ort):
    model = _model(6)
    first, _ = _convert(model, keep_io_types=True, keep_nodes=["gemm"])
    second, res = _convert(first)  # now I/O and gemm go FP16 too
    assert res.modified and res.counts["casts_removed"] >= 2
    assert _cast_chains(second) == []
    assert not [n.name for n in second.graph.node if n.op_type == "Cast"]
    x = np.random.default_rng(6).standard_normal((1, 3, 6, 6)).astype(np.float32)
    ref, got = run_ort(model, x), run_ort(second, x)
    np.testing.assert_allclose(got["y"].astype(np.float32), ref["y"], atol=FP16_RTOL)


def _small(nodes, inputs, outputs, inits=(), opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize("nested", [False, True])
def test_outer_tensors_read_by_branches_stay_float32_there(nested, assert_same_outputs):
    """If bodies stay float32 and read `r` from the outer graph without listing it as an input.

    The Relu producing `r` turns FP16; the branches must still see a float32 `r` (through a Cast).
    """

    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node(op, ["r", "c"], [f"{name}_y"])],
            name,
            [],
            [_vi(f"{name}_y", TensorProto.FLOAT, [2, 3])],
        )

    then = branch("then", "Add")
    if nested:  # the read sits one If deeper
        inner = helper.make_node(
            "If",
            ["cond2"],
            ["then_y"],
            then_branch=branch("inner_then", "Mul"),
            else_branch=branch("inner_else", "Div"),
        )
        then = helper.make_graph([inner], "then", [], [_vi("then_y", TensorProto.FLOAT, [2, 3])])
    model = _small(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node(
                "If", ["cond"], ["y"], then_branch=then, else_branch=branch("else", "Sub")
            ),
        ],
        [
            _vi("x", TensorProto.FLOAT, [2, 3]),
            _vi("cond", TensorProto.BOOL, []),
            _vi("cond2", TensorProto.BOOL, []),
        ],
        [_vi("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array([1.5], np.float32), "c")],
    )
    out, res = _convert(model, keep_io_types=True)
    assert res.counts["converted_nodes"] == 1  # the Relu
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    for cond, cond2 in ((True, True), (True, False), (False, False)):
        feeds = {"x": x, "cond": np.array(cond), "cond2": np.array(cond2)}
        assert_same_outputs(model, out, feeds, atol=1e-2)
    assert not _convert(out, keep_io_types=True)[1].modified


def test_constant_node_feeding_resize_scales_stays_float32(assert_same_outputs):
    """Scales 0.1 from a Constant node: as FP16 (0.0999756) the output would be 9x9, not 10x10."""
    scales = helper.make_node(
        "Constant",
        [],
        ["scales"],
        value=numpy_helper.from_array(np.array([1, 1, 0.1, 0.1], np.float32)),
    )
    model = _small(
        [
            scales,
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="nearest"),
        ],
        [_vi("x", TensorProto.FLOAT, [1, 1, 100, 100])],
        [_vi("y", TensorProto.FLOAT, [1, 1, 10, 10])],
    )
    out, _ = _convert(model, keep_io_types=True)
    onnx.checker.check_model(out, full_check=True)
    assert _elem(out, "scales") == TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((1, 1, 100, 100)).astype(np.float32)
    assert_same_outputs(model, out, {"x": x}, atol=1e-2)
    assert not _convert(out, keep_io_types=True)[1].modified


def _one_op_feeds(op: str) -> dict[str, np.ndarray]:
    last = np.inf if op == "IsInf" else 3.0  # inf - inf is no difference to compare elsewhere
    return {"x": np.array([-2.5, -0.3, 0.0, 0.7, 1.9, last], np.float32)}


def _one_op_model(op: str, opset: int) -> onnx.ModelProto:
    """x -> Relu (goes FP16) -> op -> y: the op sits where an FP16 region meets it."""
    inits, inputs, out_type = [], ["r"], TensorProto.FLOAT
    if op == "Range":  # Range(0, 6, 1) + r
        inits = [
            numpy_helper.from_array(np.array(v, np.float32), n)
            for n, v in (("a", 0), ("b", 6), ("d", 1))
        ]
        nodes = [
            helper.make_node("Range", ["a", "b", "d"], ["q"]),
            helper.make_node("Add", ["q", "r"], ["y"]),
        ]
    else:
        if op == "CumSum":
            inits, inputs = [numpy_helper.from_array(np.array(0, np.int64), "axis")], ["r", "axis"]
        out_type = TensorProto.BOOL if op == "IsInf" else TensorProto.FLOAT
        nodes = [helper.make_node(op, inputs, ["y"])]
    return _small(
        [helper.make_node("Relu", ["x"], ["r"]), *nodes],
        [_vi("x", TensorProto.FLOAT, [6])],
        [_vi("y", out_type, [6])],
        inits,
        opset=opset,
    )


@pytest.mark.parametrize(
    ("op", "opset"), [("Range", 13), ("Celu", 13), ("IsInf", 13), ("IsInf", 19), ("CumSum", 13)]
)
def test_ops_without_fp16_in_the_models_opset_stay_float32(op, opset, assert_same_outputs):
    model = _one_op_model(op, opset)
    out, res = _convert(model, keep_io_types=True)
    assert [s.op for s in res.skipped] == [op]
    onnx.checker.check_model(out, full_check=True)
    assert_same_outputs(model, out, _one_op_feeds(op), atol=1e-2)
    assert not _convert(out, keep_io_types=True)[1].modified


@pytest.mark.parametrize(("op", "opset"), [("IsInf", 20), ("CumSum", 14)])
def test_ops_with_fp16_from_some_opset_convert_there(op, opset, assert_same_outputs):
    model = _one_op_model(op, opset)
    out, res = _convert(model, keep_io_types=True)
    assert not res.skipped
    onnx.checker.check_model(out, full_check=True)
    node = next(n for n in out.graph.node if n.op_type == op)
    assert (
        node.input[0] == "r" and _elem(out, "r") == TensorProto.FLOAT16
    )  # reads the FP16 Relu output
    assert_same_outputs(model, out, _one_op_feeds(op), atol=1e-2)


def test_constant_of_shape_without_value_gets_an_fp16_zero(assert_same_outputs):
    """ConstantOfShape without `value` outputs float32 zeros; declaring its output FP16 needs an FP16 value."""
    model = _small(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("ConstantOfShape", ["s"], ["z"]),
            helper.make_node("Add", ["x", "z"], ["y"]),
        ],
        [_vi("x", TensorProto.FLOAT, [2, 3])],
        [_vi("y", TensorProto.FLOAT, [2, 3])],
    )
    out, _ = _convert(model, keep_io_types=True)
    onnx.checker.check_model(out, full_check=True)
    assert _elem(out, "z") == TensorProto.FLOAT16
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    assert_same_outputs(model, out, {"x": x}, atol=1e-2)
    assert not _convert(out, keep_io_types=True)[1].modified


def test_node_with_a_subgraph_attribute_stays_float32():
    """Any node carrying a graph (a custom-domain loop here, not only If/Loop/Scan) keeps float32:
    its body's types are not rewritten, so converting the node alone would break the model."""
    body = helper.make_graph(
        [helper.make_node("Relu", ["b_in"], ["b_out"])],
        "body",
        [_vi("b_in", TensorProto.FLOAT, [2, 3])],
        [_vi("b_out", TensorProto.FLOAT, [2, 3])],
    )
    model = _small(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("MyLoop", ["r"], ["y"], domain="com.example", body=body),
        ],
        [_vi("x", TensorProto.FLOAT, [2, 3])],
        [_vi("y", TensorProto.FLOAT, [2, 3])],
    )
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    out, res = _convert(model, keep_io_types=True)
    assert [(s.op, s.reason) for s in res.skipped] == [("MyLoop", "has subgraphs; kept in float32")]
    loop = next(n for n in out.graph.node if n.op_type == "MyLoop")
    producer = {o: n for n in out.graph.node for o in n.output}[loop.input[0]]
    assert producer.op_type == "Cast"  # float32 again before the node with a body
