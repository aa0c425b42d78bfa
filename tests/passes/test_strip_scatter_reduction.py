"""strip-scatter-reduction: torch 2.13 dynamo fixtures and hand-made ScatterND/ScatterElements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import apply_pass, conv_relu_model
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.passes import PassManager
from onnx2trt_lib.passes.strip_scatter_reduction import StripScatterReductionPass

DATA = Path(__file__).resolve().parents[1] / "data" / "models"
FIXTURES = sorted(DATA.glob("scatter_*.onnx"))
SCATTERS = ("ScatterND", "ScatterElements")


def _reductions(model: onnx.ModelProto) -> list[str | None]:
    """The reduction attribute of every scatter node, in order (None where absent)."""
    found = []
    for node in model.graph.node:
        if node.op_type in SCATTERS:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            value = attrs.get("reduction")
            found.append(value.decode() if isinstance(value, bytes) else value)
    return found


def _strip(model: onnx.ModelProto):
    return apply_pass(StripScatterReductionPass(), model)


def _fixture_feeds(model: onnx.ModelProto, key: str, seed: int) -> dict[str, np.ndarray] | None:
    spec = json.loads({p.key: p.value for p in model.metadata_props}["onnx2trt_test_inputs"])
    rng = np.random.default_rng(seed)
    if any(s[key] is None for s in spec.values()):
        return None
    return {name: rng.standard_normal(s[key]).astype(s["dtype"]) for name, s in spec.items()}


def test_fixtures_cover_what_the_dynamo_exporter_writes() -> None:
    """torch 2.13 writes "none" for slice assignment and torch.scatter, "add" when accumulating."""
    seen = {path.stem: _reductions(onnx.load(path)) for path in FIXTURES}
    assert seen["scatter_setslice_dynamo"] == ["none"]
    assert seen["scatter_src_dynamo"] == ["none"]
    assert seen["scatter_add_dynamo"] == ["add"]
    assert seen["scatter_index_put_accumulate_dynamo"] == ["add"]
    assert seen["scatter_index_put_dynamo"] == [None]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_only_none_is_stripped_and_outputs_equal(path: Path, assert_same_outputs) -> None:
    model = onnx.load(path)
    before = _reductions(model)
    fixed, res = _strip(model)
    onnx.checker.check_model(fixed)
    after = _reductions(fixed)
    assert after == [None if r == "none" else r for r in before]
    assert res.counts == {"stripped": before.count("none")} and res.modified == ("none" in before)
    for key, seed in (("shape", 0), ("other_shape", 1)):
        feeds = _fixture_feeds(model, key, seed)
        if feeds is not None:
            assert assert_same_outputs(model, fixed, feeds, atol=0.0) == 0.0
    _, res2 = _strip(fixed)
    assert not res2.modified and res2.counts == {"stripped": 0}


@pytest.mark.trt
@pytest.mark.parametrize(
    "name", ["scatter_setslice_dynamo", "scatter_setslice_dynamo_dynamic", "scatter_src_dynamo"]
)
def test_stripped_fixture_rtx_parses_and_builds(name: str, rtx_parse_and_build) -> None:
    fixed, res = _strip(onnx.load(DATA / f"{name}.onnx"))
    assert res.modified
    ok, errors = rtx_parse_and_build(fixed)
    assert ok, errors


def _scatter_model(op: str, reductions: list[str | None]) -> onnx.ModelProto:
    """A chain of scatters on x, one per entry of `reductions` (None: no attribute)."""
    nodes, inits, prev = [], [], "x"
    for k, reduction in enumerate(reductions):
        attrs = {} if reduction is None else {"reduction": reduction}
        if op == "ScatterND":
            inits.append(
                numpy_helper.from_array(np.array([[k % 3], [(k + 1) % 3]], np.int64), f"i{k}")
            )
            update_shape = [2, 4]
        else:
            inits.append(
                numpy_helper.from_array(np.array([[k % 4, 3], [0, 1], [2, 2]], np.int64), f"i{k}")
            )
            update_shape = [3, 2]
            attrs["axis"] = 1
        inits.append(numpy_helper.from_array(np.full(update_shape, 0.5 + k, np.float32), f"u{k}"))
        nodes.append(
            helper.make_node(op, [prev, f"i{k}", f"u{k}"], [f"s{k}"], name=f"scatter{k}", **attrs)
        )
        prev = f"s{k}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("op", ["ScatterND", "ScatterElements"])
def test_handmade_chain_strips_only_none(op: str, assert_same_outputs) -> None:
    reductions = ["none", "add", None, "mul", "none", "max", "min"]
    model = _scatter_model(op, reductions)
    fixed, res = _strip(model)
    assert _reductions(fixed) == [None, "add", None, "mul", None, "max", "min"]
    assert res.counts == {"stripped": 2}
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    assert_same_outputs(model, fixed, {"x": x}, atol=0.0)


def test_no_match_and_input_model_untouched() -> None:
    model = conv_relu_model()
    snapshot = model.SerializeToString()
    fixed, report = PassManager([StripScatterReductionPass()]).run(model)
    assert not report.modified and fixed is model and model.SerializeToString() == snapshot
    kept = _scatter_model("ScatterND", ["add", None])
    _, res = _strip(kept)
    assert not res.modified and res.counts == {"stripped": 0}


def test_inside_if_branch(assert_same_outputs) -> None:
    """A scatter in a subgraph (here an If branch) is stripped too."""
    inner = _scatter_model("ScatterND", ["none"]).graph
    branch = helper.make_graph(
        list(inner.node), "then", [], list(inner.output), initializer=list(inner.initializer)
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [3, 4])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    fixed, res = _strip(model)
    assert res.counts == {"stripped": 1}
    then_nodes = fixed.graph.node[0].attribute[0].g.node
    assert all(a.name != "reduction" for n in then_nodes for a in n.attribute)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert_same_outputs(model, fixed, {"c": np.array(True), "x": x}, atol=0.0)


def test_inside_local_function(assert_same_outputs) -> None:
    """The TensorRT parser inlines model-local functions: a scatter there is stripped too."""
    function = helper.make_function(
        "local",
        "SetRows",
        ["d", "i", "u"],
        ["o"],
        [helper.make_node("ScatterND", ["d", "i", "u"], ["o"], reduction="none")],
        [helper.make_opsetid("", 18)],
    )
    inits = [
        numpy_helper.from_array(np.array([[0], [2]], np.int64), "idx"),
        numpy_helper.from_array(np.full((2, 4), 0.5, np.float32), "upd"),
    ]
    graph = helper.make_graph(
        [helper.make_node("SetRows", ["x", "idx", "upd"], ["y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
        functions=[function],
    )
    model.ir_version = 8
    fixed, report = PassManager([StripScatterReductionPass()]).run(model)
    assert report.records[0].result.counts == {"stripped": 1}
    assert all(a.name != "reduction" for a in fixed.functions[0].node[0].attribute)
    onnx.checker.check_model(fixed, full_check=True)
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    assert_same_outputs(model, fixed, {"x": x}, atol=0.0)
    assert not PassManager([StripScatterReductionPass()]).run(fixed)[1].modified


def test_same_op_name_in_another_domain_is_not_touched() -> None:
    """A custom-domain 'ScatterND' is some other op: its reduction='none' means whatever it means."""
    model = _scatter_model("ScatterND", ["none"])
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    graph = gs.import_onnx(model)
    res = StripScatterReductionPass().run(graph)
    assert not res.modified and res.counts == {"stripped": 0}
    assert graph.nodes[0].op == "ScatterND" and graph.nodes[0].attrs["reduction"] == "none"
