"""decompose-gather-elements: torch-exported fixtures, hand-made edge cases, random graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import apply_pass, conv_relu_model, run_ort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.passes import PassManager
from onnx2trt_lib.passes.decompose_gather_elements import DecomposeGatherElementsPass

DATA = Path(__file__).resolve().parents[1] / "data" / "models"
FIXTURES = sorted(DATA.glob("gather_*.onnx"))
# what TensorRT 7.0/7.1 import, and what the rewrite may emit
ALLOWED_NEW_OPS = {"Gather", "Reshape", "Shape", "Add", "Mul", "Range", "Concat", "Cast"}


def _decompose(model: onnx.ModelProto):
    return apply_pass(DecomposeGatherElementsPass(), model)


def _fixture_feeds(model: onnx.ModelProto, key: str, seed: int) -> dict[str, np.ndarray] | None:
    """Inputs per the spec the export script stored in metadata ("shape" or "other_shape")."""
    spec = json.loads({p.key: p.value for p in model.metadata_props}["onnx2trt_test_inputs"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, s in spec.items():
        shape = s[key]
        if shape is None:
            return None
        if s["index_high"] is not None:  # negative indices too: ONNX allows [-n, n)
            feeds[name] = rng.integers(-s["index_high"], s["index_high"], size=shape).astype(
                s["dtype"]
            )
        else:
            feeds[name] = rng.standard_normal(shape).astype(s["dtype"])
    return feeds


def _assert_new_gathers_read_non_negative(
    model: onnx.ModelProto, fixed: onnx.ModelProto, feeds
) -> None:
    """Every Gather the rewrite added reads non-negative indices: old TensorRT Gather layers have no
    negative-index support, and ONNX Runtime (which has) would hide a missing normalisation."""
    old_names = {n.name for n in model.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in fixed.graph.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(fixed)
    del probe.graph.output[:]
    for node in fixed.graph.node:
        if node.op_type != "Gather" or node.name in old_names:
            continue
        if node.input[1] in inits:
            values = inits[node.input[1]]
            assert values.size == 0 or values.min() >= 0, f"{node.name}: negative constant index"
        else:
            probe.graph.output.append(helper.make_empty_tensor_value_info(node.input[1]))
    if probe.graph.output:
        for name, values in zip(
            [o.name for o in probe.graph.output], run_ort(probe, feeds), strict=True
        ):
            assert values.size == 0 or values.min() >= 0, f"{name}: negative index at run time"


def test_fixtures_present() -> None:
    assert len(FIXTURES) >= 20, f"expected the torch-exported gather fixtures under {DATA}"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_decomposed_and_exact(path: Path, assert_same_outputs) -> None:
    model = onnx.load(path)
    before = sum(n.op_type == "GatherElements" for n in model.graph.node)
    fixed, res = _decompose(model)
    onnx.checker.check_model(fixed)
    ops = [n.op_type for n in fixed.graph.node]
    assert "GatherElements" not in ops
    assert res.modified and res.counts == {"decomposed": before} and not res.skipped
    old_ops = {n.op_type for n in model.graph.node}
    assert set(ops) - old_ops <= ALLOWED_NEW_OPS
    for key, seed in (("shape", 0), ("shape", 1), ("other_shape", 2)):
        feeds = _fixture_feeds(model, key, seed)
        if feeds is not None:
            assert assert_same_outputs(model, fixed, feeds, atol=0.0) == 0.0
            _assert_new_gathers_read_non_negative(model, fixed, feeds)
    again, res2 = _decompose(fixed)
    assert not res2.modified and res2.counts == {"decomposed": 0}


@pytest.mark.trt
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_rtx_parses_and_builds(path: Path, rtx_parse_and_build) -> None:
    fixed, _ = _decompose(onnx.load(path))
    ok, errors = rtx_parse_and_build(fixed)
    assert ok, errors


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_pipeline_with_infer_shapes_is_a_no_op_the_second_time(path: Path) -> None:
    """New tensors carry inferred shapes, so infer-shapes on a fixed model finds nothing to add."""
    from onnx2trt_lib.passes.infer_shapes import InferShapesPass  # noqa: PLC0415

    manager = PassManager([InferShapesPass(), DecomposeGatherElementsPass()])
    fixed, report = manager.run(onnx.load(path))
    assert report.modified
    again, report2 = manager.run(fixed)
    assert not report2.modified, report2.to_dict()
    assert again.SerializeToString() == fixed.SerializeToString()


def test_no_match_leaves_graph_alone() -> None:
    model = conv_relu_model()
    graph = gs.import_onnx(model)
    nodes_before = [(n.op, n.name) for n in graph.nodes]
    res = DecomposeGatherElementsPass().run(graph)
    assert not res.modified and res.counts == {"decomposed": 0} and not res.skipped
    assert [(n.op, n.name) for n in graph.nodes] == nodes_before


def test_pass_manager_never_touches_the_input_model() -> None:
    model = onnx.load(FIXTURES[0])
    snapshot = model.SerializeToString()
    fixed, report = PassManager([DecomposeGatherElementsPass()]).run(model)
    assert model.SerializeToString() == snapshot
    assert report.modified and all(n.op_type != "GatherElements" for n in fixed.graph.node)


def _gather_model(
    data_shape,
    index_shape,
    axis,
    *,
    index_type=TensorProto.INT64,
    const_indices=None,
    data_type=TensorProto.FLOAT,
    opset=13,
) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("data", data_type, data_shape)]
    inits = []
    if const_indices is None:
        inputs.append(helper.make_tensor_value_info("indices", index_type, index_shape))
    else:
        inits.append(numpy_helper.from_array(const_indices, "indices"))
    node = helper.make_node("GatherElements", ["data", "indices"], ["y"], axis=axis, name="ge")
    out_shape = index_shape if const_indices is None else list(const_indices.shape)
    graph = helper.make_graph(
        [node],
        "g",
        inputs,
        [helper.make_tensor_value_info("y", data_type, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.trt
@pytest.mark.parametrize(
    ("data_shape", "index_shape", "axis", "index_type"),
    [
        (
            ["a", 4, "b", 3],
            ["c", 2, "d", 3],
            -2,
            TensorProto.INT32,
        ),  # dynamic dims, int32: Shape/Range/Cast
        ([7], [9], 0, TensorProto.INT64),  # rank 1: no Reshape
        ([2, 3, 4, 5], [2, 3, 4, 1], 3, TensorProto.INT64),  # all static: constant grid only
    ],
)
def test_handmade_rtx_parses_and_builds(
    data_shape, index_shape, axis, index_type, rtx_parse_and_build
) -> None:
    fixed, res = _decompose(_gather_model(data_shape, index_shape, axis, index_type=index_type))
    assert res.counts == {"decomposed": 1}
    ok, errors = rtx_parse_and_build(fixed, dynamic_range=(2, 3, 4))
    assert ok, errors


def test_unknown_rank_is_skipped_with_reason() -> None:
    graph = gs.Graph(opset=13)
    data, indices, y = (
        gs.Variable("d", np.float32),
        gs.Variable("i", np.int64),
        gs.Variable("y", np.float32),
    )
    graph.nodes.append(gs.Node("GatherElements", "ge", {"axis": 1}, [data, indices], [y]))
    graph.inputs, graph.outputs = [data, indices], [y]
    res = DecomposeGatherElementsPass().run(graph)
    assert not res.modified
    assert [(s.node, s.op) for s in res.skipped] == [("ge", "GatherElements")]
    assert "infer-shapes" in res.skipped[0].reason
    assert [n.op for n in graph.nodes] == ["GatherElements"]


def test_out_of_range_constant_indices_are_skipped() -> None:
    model = _gather_model([3, 4], None, 1, const_indices=np.array([[0, 4]], np.int64))
    fixed, res = _decompose(model)
    assert not res.modified and "outside [-4, 4)" in res.skipped[0].reason
    assert [n.op_type for n in fixed.graph.node] == ["GatherElements"]


def test_constant_indices_fold_to_one_constant(assert_same_outputs) -> None:
    idx = np.array(
        [[[-1, 0, 2], [1, -3, 0]], [[2, 2, -2], [0, 1, -1]]], np.int64
    )  # negatives folded too
    model = _gather_model([2, 3, 3], None, 1, const_indices=idx)
    fixed, res = _decompose(model)
    assert res.counts == {"decomposed": 1}
    assert [n.op_type for n in fixed.graph.node] == ["Reshape", "Gather"]
    x = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    assert_same_outputs(model, fixed, {"data": x}, atol=0.0)


def test_two_unnamed_nodes_get_distinct_new_names(assert_same_outputs) -> None:
    nodes = [
        helper.make_node("GatherElements", ["data", "indices"], ["a"], axis=0),
        helper.make_node("GatherElements", ["data", "indices"], ["b"], axis=1),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", "n"]),
            helper.make_tensor_value_info("indices", TensorProto.INT32, ["n", "n"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    fixed, res = _decompose(model)
    assert res.counts == {"decomposed": 2}
    onnx.checker.check_model(fixed, full_check=True)
    rng = np.random.default_rng(5)
    for n in (3, 6):
        feeds = {
            "data": rng.standard_normal((n, n)).astype(np.float32),
            "indices": rng.integers(-n, n, (n, n)).astype(np.int32),
        }
        assert_same_outputs(model, fixed, feeds, atol=0.0)


def test_inside_if_branch(assert_same_outputs) -> None:
    """GatherElements in a subgraph is rewritten in that subgraph (outer tensors referenced)."""
    ge = helper.make_node("GatherElements", ["data", "indices"], ["t"], axis=-1, name="inner")
    then = helper.make_graph(
        [ge], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])]
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["data"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])],
    )
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, [2, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    fixed, res = _decompose(model)
    assert res.counts == {"decomposed": 1}
    assert all(n.op_type != "GatherElements" for n in fixed.graph.node[0].attribute[0].g.node)
    feeds = {
        "cond": np.array(True),
        "data": np.arange(6, dtype=np.float32).reshape(2, 3),
        "indices": np.array([[2, -1, 0], [-3, 1, 1]], np.int64),
    }
    assert_same_outputs(model, fixed, feeds, atol=0.0)


@st.composite
def _cases(draw):
    """A random GatherElements: rank 1-4, any axis (negative too), static or symbolic dims."""
    rank = draw(st.integers(1, 4))
    axis = draw(st.integers(-rank, rank - 1))
    data_dims = [draw(st.integers(1, 5)) for _ in range(rank)]
    index_dims = [
        draw(st.integers(1, 6)) if d == axis % rank else draw(st.integers(1, data_dims[d]))
        for d in range(rank)
    ]
    dynamic_data = [draw(st.booleans()) for _ in range(rank)]
    dynamic_index = [draw(st.booleans()) for _ in range(rank)]
    index_type = draw(st.sampled_from([TensorProto.INT64, TensorProto.INT32]))
    data_type = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.INT32]))
    const = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return (
        rank,
        axis,
        data_dims,
        index_dims,
        dynamic_data,
        dynamic_index,
        index_type,
        data_type,
        const,
        seed,
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_cases())
def test_random_graphs_match_onnxruntime_exactly(case, assert_same_outputs) -> None:
    rank, axis, data_dims, index_dims, dyn_data, dyn_index, index_type, data_type, const, seed = (
        case
    )
    rng = np.random.default_rng(seed)
    n_axis = data_dims[axis % rank]
    np_index = np.int64 if index_type == TensorProto.INT64 else np.int32
    indices = rng.integers(-n_axis, n_axis, size=index_dims).astype(np_index)
    data = (rng.standard_normal(data_dims) * 100).astype(
        np.float32 if data_type == TensorProto.FLOAT else np.int32
    )
    data_shape = [
        f"d{i}" if dyn else n for i, (n, dyn) in enumerate(zip(data_dims, dyn_data, strict=True))
    ]
    index_shape = [
        f"i{i}" if dyn else n for i, (n, dyn) in enumerate(zip(index_dims, dyn_index, strict=True))
    ]
    model = _gather_model(
        data_shape,
        index_shape,
        axis,
        index_type=index_type,
        data_type=data_type,
        const_indices=indices if const else None,
    )
    fixed, res = _decompose(model)
    assert res.counts == {"decomposed": 1}
    assert all(n.op_type != "GatherElements" for n in fixed.graph.node)
    assert {n.op_type for n in fixed.graph.node} <= ALLOWED_NEW_OPS
    feeds = {"data": data} if const else {"data": data, "indices": indices}
    assert assert_same_outputs(model, fixed, feeds, atol=0.0) == 0.0
    _assert_new_gathers_read_non_negative(model, fixed, feeds)


@pytest.mark.parametrize("dynamic", [False, True])
def test_same_node_name_in_main_graph_and_branch(dynamic, assert_same_outputs) -> None:
    """Node names need not be unique: 'ge' here and 'ge' in a branch still get distinct new tensors."""

    def branch(name: str, node_name: str) -> onnx.GraphProto:
        ge = helper.make_node(
            "GatherElements", ["data", "indices"], [f"{name}_y"], axis=1, name=node_name
        )
        return helper.make_graph(
            [ge], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)]
        )

    shape = ["n", "m"] if dynamic else [3, 4]
    nodes = [
        helper.make_node("GatherElements", ["data", "indices"], ["y"], axis=1, name="ge"),
        helper.make_node(
            "If",
            ["cond"],
            ["z"],
            name="if",
            then_branch=branch("then", "ge"),
            else_branch=branch("else", "other"),
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("indices", TensorProto.INT64, shape),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, shape),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    fixed, res = PassManager([DecomposeGatherElementsPass()]).run(model)
    assert res.records[0].result.counts == {"decomposed": 3}
    onnx.checker.check_model(fixed, full_check=True)
    rng = np.random.default_rng(3)
    for cond in (True, False):
        feeds = {
            "data": rng.standard_normal((3, 4)).astype(np.float32),
            "indices": rng.integers(-4, 4, (3, 4)),
            "cond": np.array(cond),
        }
        assert_same_outputs(model, fixed, feeds, atol=0.0)
