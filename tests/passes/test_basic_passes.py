"""fold-constants, cleanup and infer-shapes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from helpers import conv_relu_model, run_ort
from onnx import TensorProto, helper

from onnx2trt_lib.passes import PassManager, get_pass


def _shape_chain_model() -> onnx.ModelProto:
    """y = Reshape(x, Concat(Shape(x)[0:2], [-1])): shape math that folds when x is static."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "start", "end"], ["s01"]),
        helper.make_node("Concat", ["s01", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array([0], np.int64), "start"),
        onnx.numpy_helper.from_array(np.array([2], np.int64), "end"),
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_fold_constants_folds_shape_math_to_fixpoint() -> None:
    model = _shape_chain_model()
    fixed, report = PassManager([get_pass("fold-constants")]).run(model)
    assert report.records[0].result.counts["folded_tensors"] >= 1
    assert [n.op_type for n in fixed.graph.node] == ["Reshape"]
    x = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(run_ort(model, {"x": x})[0], run_ort(fixed, {"x": x})[0])
    _, again = PassManager([get_pass("fold-constants")]).run(fixed)
    assert not again.modified


def test_fold_constants_no_match_on_dynamic_shapes() -> None:
    model = _shape_chain_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    fixed, report = PassManager([get_pass("fold-constants")]).run(model)
    assert not report.modified and fixed is model


def test_cleanup_removes_dead_nodes_only() -> None:
    model = conv_relu_model()
    fixed, report = PassManager([get_pass("cleanup")]).run(model)
    assert report.records[0].result.counts["removed_nodes"] == 1
    assert "dead_branch" not in [n.name for n in fixed.graph.node]
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32)}
    np.testing.assert_array_equal(run_ort(model, feeds)[0], run_ort(fixed, feeds)[0])
    assert not PassManager([get_pass("cleanup")]).run(fixed)[1].modified


def test_infer_shapes_annotates_unknown_tensors_once() -> None:
    model = conv_relu_model()
    graph = gs.import_onnx(model)
    assert graph.tensors()["c"].shape is None
    res = get_pass("infer-shapes").run(graph)
    assert res.modified and res.counts["tensors_annotated"] >= 2
    assert list(graph.tensors()["c"].shape) == [1, 4, 8, 8]
    assert graph.tensors()["c"].dtype == np.float32
    assert not get_pass("infer-shapes").run(graph).modified
