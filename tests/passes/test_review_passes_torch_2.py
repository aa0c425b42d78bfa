"""Review regressions for fold-constants: graph-surgeon's shape cast elision, and If/Loop bodies.

* graph-surgeon's folding rewrites `Cast(int -> float) -> op(float constant) -> Cast(-> int)` as
  `op(int constant)`, casting the constant in place: `Cast(size) * 1.5 -> Cast` (what torch's
  dynamo exporter writes for `F.interpolate(scale_factor=1.5)`) became `size * 1`, a float
  constant shared with a float op became int64 for it too, and `Less` got an int64 output.
  The exact elisions that remain must make the pass report `modified`.
* graph-surgeon does not hand `should_exclude_node` down to If/Loop/Scan bodies: a random
  generator in a branch was folded into a constant. Folding inside bodies, and an If with a
  constant condition replaced by its branch, must make the pass report `modified`.
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import onnx2trt_lib
from onnx2trt_lib.passes.fold_constants import FoldConstantsPass


def _model(nodes, outputs, inits=(), inputs=None, opset=17) -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TP.FLOAT, ["n", 3])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)  # the elision needs the tensor types


def _shape_arith(op: str, k: float, out_type=TP.INT64, extra=()) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TP.FLOAT),
        helper.make_node(op, ["sf", "k"], ["m"]),
        helper.make_node("Cast", ["m"], ["y"], to=out_type),
        *extra,
    ]
    outputs = [helper.make_tensor_value_info("y", out_type, [2])]
    if extra:
        outputs.append(helper.make_tensor_value_info("z", TP.FLOAT, ["n", 3]))
    return _model(nodes, outputs, [numpy_helper.from_array(np.array(k, np.float32), "k")])


def _fold(model: onnx.ModelProto):
    """Run the pass on a graph of a copy (no PassManager shortcut): (exported model, PassResult)."""
    graph = gs.import_onnx(onnx.ModelProto.FromString(model.SerializeToString()))
    res = FoldConstantsPass().run(graph)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    onnx.checker.check_model(out, full_check=True)
    return out, res


def _feeds(*rows):
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((n, 3)).astype(np.float32)} for n in rows]


@pytest.mark.parametrize(
    "op, k, extra",
    [
        ("Mul", 1.5, ()),  # floor(n * 1.5), not n * 1
        ("Sub", 0.5, ()),  # trunc(n - 0.5) = n - 1, not n - 0
        ("Less", 2.5, ()),  # bool output: must stay bool before its Cast
        ("Mul", 2.0, (helper.make_node("Mul", ["x", "k"], ["z"]),)),  # k also feeds a float Mul
    ],
)
def test_fold_constants_keeps_inexact_shape_cast_chains(op, k, extra, assert_same_outputs):
    model = _shape_arith(op, k, extra=extra)
    folded, _ = _fold(model)
    for feeds in _feeds(5, 7):
        assert_same_outputs(model, folded, feeds, atol=0)


def test_fold_constants_reports_exact_cast_elision(assert_same_outputs):
    model = _shape_arith("Mul", 2.0)
    folded, res = _fold(model)
    assert res.modified and res.counts["elided_casts"] == 1
    assert [n.op_type for n in folded.graph.node] == ["Shape", "Mul"]
    for feeds in _feeds(5, 7):
        assert_same_outputs(model, folded, feeds, atol=0)
    # through fix(): the reported change is kept, and a second run changes nothing
    fixed, report = onnx2trt_lib.fix(model, passes=["fold-constants"])
    assert report.modified and [n.op_type for n in fixed.graph.node] == ["Shape", "Mul"]
    assert not onnx2trt_lib.fix(fixed, passes=["fold-constants"])[1].modified


def _if_model(then_nodes, cond: bool | None = None) -> onnx.ModelProto:
    then = helper.make_graph(
        then_nodes, "then", [], [helper.make_tensor_value_info("t", TP.FLOAT, [2, 3])]
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TP.FLOAT, [2, 3])],
    )
    inputs = [helper.make_tensor_value_info("x", TP.FLOAT, [2, 3])]
    inits = []
    if cond is None:
        inputs.insert(0, helper.make_tensor_value_info("c", TP.BOOL, []))
    else:
        inits.append(numpy_helper.from_array(np.array(cond), "c"))
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TP.FLOAT, [2, 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_fold_constants_never_folds_random_in_a_branch():
    model = _if_model(
        [
            helper.make_node("RandomUniform", [], ["r"], shape=[2, 3], dtype=TP.FLOAT),
            helper.make_node("Mul", ["r", "x"], ["t"]),
        ]
    )
    folded, res = _fold(model)
    then = next(a.g for a in folded.graph.node[0].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["RandomUniform", "Mul"]
    assert not res.modified


def test_fold_constants_reports_folding_inside_a_branch(assert_same_outputs):
    model = _if_model(
        [
            helper.make_node(
                "Constant",
                [],
                ["k"],
                value=numpy_helper.from_array(np.full((2, 3), 4.0, np.float32)),
            ),
            helper.make_node("Sqrt", ["k"], ["r"]),
            helper.make_node("Mul", ["r", "x"], ["t"]),
        ]
    )
    fixed, report = onnx2trt_lib.fix(model, passes=["fold-constants"])
    assert report.modified
    then = next(a.g for a in fixed.graph.node[0].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["Mul"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for c in (True, False):
        assert_same_outputs(model, fixed, {"c": np.array(c), "x": x}, atol=0)


def test_fold_constants_reports_flattened_if(assert_same_outputs):
    model = _if_model([helper.make_node("Neg", ["x"], ["t"])], cond=True)
    fixed, report = onnx2trt_lib.fix(model, passes=["fold-constants"])
    assert report.modified and report.records[0].result.counts["flattened_ifs"] == 1
    assert [n.op_type for n in fixed.graph.node] == ["Neg"]
    assert_same_outputs(model, fixed, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, atol=0)


def test_fix_dynamo_interpolate_fractional_scale_dynamic(assert_same_outputs):
    """torch's dynamo exporter decomposes the interpolation: sizes are `Cast(Cast(n) * 1.5)`."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    import torch.nn.functional as F

    class Up(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=1.5, mode="linear", align_corners=False)

    buf = io.BytesIO()
    torch.onnx.export(
        Up().eval(),
        (torch.randn(1, 2, 6),),
        buf,
        opset_version=18,
        dynamo=True,
        input_names=["x"],
        dynamic_shapes=({2: torch.export.Dim("w", min=2, max=64)},),
    )
    model = onnx.load_from_string(buf.getvalue())
    fixed, _ = onnx2trt_lib.fix(model, target="tensorrt-7.1")
    onnx.checker.check_model(fixed, full_check=True)
    rng = np.random.default_rng(0)
    for w in (6, 9):
        assert_same_outputs(model, fixed, {"x": rng.standard_normal((1, 2, w)).astype(np.float32)})
