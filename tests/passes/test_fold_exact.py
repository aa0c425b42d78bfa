"""fold-constants is exact where graph-surgeon's folding is not (issue 15's cases).

Each model is built with onnx.helper; the fixed model is checked against the original in ONNX
Runtime, not against hard-coded values.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.passes import PassManager, get_pass


def _fold(model: onnx.ModelProto):
    return PassManager([get_pass("fold-constants")]).run(model)


def _model(nodes, inputs, outputs, inits=(), opset=17, ir=8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def _shape_model(dims, start, end) -> onnx.ModelProto:
    """s = Shape(x, start, end); outputs s, s[0] (or s itself when empty) and Concat(s, s)."""
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], **attrs),
        helper.make_node("Concat", ["s", "s"], ["ss"], axis=0),
        helper.make_node("Mul", ["s", "two"], ["s2"]),
        helper.make_node("Slice", ["s", "zero", "one"], ["s0"]),
        helper.make_node("Gather", ["ss", "zero_scalar"], ["g0"], axis=0),
    ]
    inits = [
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array(0, np.int64), "zero_scalar"),
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in ("s2", "s0")]
    outs.append(helper.make_tensor_value_info("ss", TensorProto.INT64, None))
    return _model(
        nodes[:4],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        outs,
        inits,
        opset=17,
    )


def test_shape_start_folds_exactly(assert_same_outputs) -> None:
    """Shape(x, start=1) of 3x4x5 is [4, 5] (graph-surgeon folded it to [3, 4, 5])."""
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["s"], start=1),
            helper.make_node("Gather", ["s", "i0"], ["g"], axis=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
        [
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("g", TensorProto.INT64, []),
        ],
        [numpy_helper.from_array(np.array(0, np.int64), "i0")],
    )
    fixed, report = _fold(model)
    assert report.modified
    assert not any(n.op_type == "Shape" for n in fixed.graph.node)
    assert_same_outputs(model, fixed, {"x": np.zeros((3, 4, 5), np.float32)}, atol=0)
    assert not _fold(fixed)[1].modified


def test_shape_start_with_dynamic_dim_is_kept(assert_same_outputs) -> None:
    """Shape(x, start=1)[0] of [3, N, 5] is N: nothing folds, the Shape keeps its start."""
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["s"], start=1),
            helper.make_node("Gather", ["s", "i0"], ["g"], axis=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, "N", 5])],
        [helper.make_tensor_value_info("g", TensorProto.INT64, [])],
        [numpy_helper.from_array(np.array(0, np.int64), "i0")],
    )
    fixed, report = _fold(model)
    assert not report.modified and fixed is model
    assert_same_outputs(model, fixed, {"x": np.zeros((3, 7, 5), np.float32)}, atol=0)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dims=st.lists(st.one_of(st.integers(1, 6), st.just("N")), min_size=1, max_size=4),
    start=st.one_of(st.none(), st.integers(-5, 5)),
    end=st.one_of(st.none(), st.integers(-5, 5)),
)
def test_shape_start_end_fold_matches_ort(assert_same_outputs, dims, start, end) -> None:
    model = _shape_model(dims, start, end)
    fixed, _ = _fold(model)
    x = np.zeros([7 if d == "N" else d for d in dims], np.float32)
    assert_same_outputs(model, fixed, {"x": x}, atol=0)
    assert not _fold(fixed)[1].modified


def _multi_output_if(cond: bool) -> onnx.ModelProto:
    """An If on a constant condition returning 4 values: one made in the branch and read there
    too, a copy of an outer tensor, a branch constant. (A branch returning one tensor twice is
    left out: ONNX Runtime 1.23 gives a wrong value for the first of them.)"""
    then = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("Add", ["a", "a"], ["b"]),
            helper.make_node("Identity", ["x"], ["xt"]),
            helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.float32(3))),
        ],
        "then",
        [],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("b", "xt", "k", "a")],
    )
    other = helper.make_graph(
        [
            helper.make_node("Neg", ["x"], ["c"]),
            helper.make_node("Abs", ["c"], ["d"]),
            helper.make_node("Identity", ["x"], ["xe"]),
            helper.make_node("Constant", [], ["k2"], value=numpy_helper.from_array(np.float32(5))),
        ],
        "else",
        [],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("c", "d", "k2", "xe")],
    )
    return _model(
        [
            helper.make_node("Not", ["ncond"], ["cond"]),
            helper.make_node(
                "If", ["cond"], ["o1", "o2", "o3", "o4"], then_branch=then, else_branch=other
            ),
            helper.make_node("Add", ["o1", "o4"], ["sum"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("o2", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("o3", TensorProto.FLOAT, []),
        ],
        [numpy_helper.from_array(np.array(not cond), "ncond")],
    )


@pytest.mark.parametrize("cond", [True, False])
def test_multi_output_if_with_constant_condition_keeps_every_output(
    assert_same_outputs, cond
) -> None:
    model = _multi_output_if(cond)
    onnx.checker.check_model(model, full_check=True)
    fixed, report = _fold(model)
    assert report.records[0].result.counts["flattened_ifs"] == 1
    assert not any(n.op_type == "If" for n in fixed.graph.node)
    onnx.checker.check_model(fixed, full_check=True)
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    assert_same_outputs(model, fixed, {"x": x}, atol=0)
    assert not _fold(fixed)[1].modified


def test_ir3_model_keeps_initializers_as_inputs(assert_same_outputs) -> None:
    """IR < 4: every initializer must be a graph input too ("in initializer but not in graph input")."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    b = numpy_helper.from_array(np.ones((2, 3), np.float32), "b")
    model = _model(
        [helper.make_node("Add", ["w", "b"], ["wb"]), helper.make_node("Mul", ["x", "wb"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [w, b],
        opset=8,
        ir=3,
    )
    onnx.checker.check_model(model, full_check=True)
    fixed, report = _fold(model)
    assert report.modified and fixed.ir_version == 3
    assert {i.name for i in fixed.graph.initializer} <= {i.name for i in fixed.graph.input}
    x = np.full((2, 3), 2, np.float32)
    assert_same_outputs(model, fixed, {"x": x}, atol=0)


def test_sequence_values_are_left_alone(assert_same_outputs) -> None:
    """A sequence of constants is not folded (graph-surgeon stores tensors only), the rest is."""
    a = numpy_helper.from_array(np.ones((2,), np.float32), "a")
    b = numpy_helper.from_array(np.full((2,), 2, np.float32), "b")
    model = _model(
        [
            helper.make_node("SequenceConstruct", ["a", "b"], ["seq"]),
            helper.make_node("ConcatFromSequence", ["seq"], ["cat"], axis=0),
            helper.make_node("Add", ["a", "b"], ["ab"]),
            helper.make_node("Mul", ["x", "ab"], ["xab"]),
            helper.make_node("Concat", ["cat", "xab"], ["y"], axis=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
        [a, b],
    )
    fixed, report = _fold(model)
    res = report.records[0].result
    assert res.counts["folded_tensors"] == 1  # a + b
    assert [s.op for s in res.skipped] == ["SequenceConstruct"]
    assert "sequence" in res.skipped[0].reason
    assert_same_outputs(model, fixed, {"x": np.array([3, 4], np.float32)}, atol=0)


def test_optional_values_leave_the_model_unchanged(assert_same_outputs) -> None:
    a = numpy_helper.from_array(np.ones((2,), np.float32), "a")
    model = _model(
        [
            helper.make_node("Optional", ["a"], ["opt"]),
            helper.make_node("OptionalGetElement", ["opt"], ["a2"]),
            helper.make_node("Add", ["a", "a"], ["aa"]),
            helper.make_node("Add", ["a2", "aa"], ["s"]),
            helper.make_node("Add", ["x", "s"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [a],
        opset=18,
    )
    model.graph.value_info.append(
        helper.make_value_info(
            "opt",
            helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2])),
        )
    )
    fixed, report = _fold(model)
    assert fixed is model and not report.modified
    assert "optional" in report.records[0].result.skipped[0].reason


def test_io_value_info_without_shape_keeps_the_declared_shape(assert_same_outputs) -> None:
    """ddddocr's common_old.onnx: a value_info entry without a shape for a graph output."""
    model = _model(
        [
            helper.make_node("Add", ["one", "one"], ["two"]),
            helper.make_node("Mul", ["x", "two"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "N"])],
        [numpy_helper.from_array(np.float32(1), "one")],
    )
    model.graph.value_info.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    onnx.checker.check_model(model, full_check=True)
    fixed, report = _fold(model)
    assert report.modified
    dims = fixed.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == [1, "N"]
    assert_same_outputs(model, fixed, {"x": np.ones((1, 3), np.float32)}, atol=0)
