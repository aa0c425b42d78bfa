"""Collection edge cases: subgraph-capturing If/Loop outputs, float64 activations, inputs of unknown rank.

The invariant: every collected tensor's histogram equals the reference histogram of that
tensor's values, read from ONNX Runtime with only that tensor exposed.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.calib import reference
from onnx2trt_lib.calib.collect import CollectOptions, collect
from onnx2trt_lib.calib.tensors import quantizable_tensors


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _values(model: onnx.ModelProto, data, name: str) -> np.ndarray:
    """`name`'s values over `data` as float64, with only that tensor exposed (no graph optimization)."""
    if name in {i.name for i in model.graph.input}:
        return np.concatenate([np.asarray(b[name], dtype=np.float64).ravel() for b in data])
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    if name not in {o.name for o in exposed.graph.output}:
        exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return np.concatenate([session.run([name], b)[0].astype(np.float64).ravel() for b in data])


def _assert_matches_reference(model: onnx.ModelProto, data, state) -> None:
    for name, hist in state.histograms.items():
        values = _values(model, data, name)
        finite = values[np.isfinite(values)]
        assert hist.count == finite.size, name
        assert hist.range_max == 2.0 ** np.ceil(np.log2(np.abs(finite).max())), name
        assert np.array_equal(
            hist.counts, reference.histogram(finite, hist.bin_width, hist.num_bins)
        ), name


def _data(shape, dtype=np.float32, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(dtype)} for _ in range(n)]


def test_if_and_loop_outputs_that_capture_activations_are_collected():
    """A constant If condition / Loop trip count does not make outputs computed from captured activations constants."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Add", ["acc", "a"], ["acc_out"]),
            helper.make_node("Relu", ["acc_out"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("scan", TensorProto.FLOAT, None),
        ],
    )
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["a"], name="mul"),
        helper.make_node(
            "If", ["cond"], ["if_out"], name="if", then_branch=then_g, else_branch=else_g
        ),
        helper.make_node(
            "Loop", ["trips", "", "zeros"], ["loop_out", "scans"], name="loop", body=body
        ),
        helper.make_node("Add", ["if_out", "loop_out"], ["y"], name="add"),
    ]
    inits = [
        numpy_helper.from_array(np.array(2, np.float32), "two"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.array(3, np.int64), "trips"),
        numpy_helper.from_array(np.zeros((2, 8), np.float32), "zeros"),
    ]
    model = _model(
        nodes,
        [x],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("scans", TensorProto.FLOAT, None),
        ],
        inits,
    )
    assert quantizable_tensors(model) == ["x", "a", "if_out", "loop_out", "scans", "y"]
    data = _data((2, 8))
    state = collect(
        model, data, options=CollectOptions(mode="two-pass", ort_optimization="disable")
    )
    assert list(state.histograms) == ["x", "a", "if_out", "loop_out", "scans", "y"]
    _assert_matches_reference(model, data, state)


def test_if_reading_only_constants_stays_a_constant():
    then_g = helper.make_graph(
        [helper.make_node("Neg", ["c"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("If", ["cond"], ["k"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Mul", ["x", "k"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.ones(8, np.float32), "c"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    assert quantizable_tensors(model) == ["x", "y"]


def test_float64_activations_are_binned_as_float64():
    """Fetched double outputs used to be cast to float32: values beyond 3.4e38 became Inf, bins moved."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    for k in (1e300, 1.0000001):
        model = _model(
            nodes,
            [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 3])],
            [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
            [numpy_helper.from_array(np.array(k, np.float64), "k")],
        )
        data = _data((2, 3), np.float64, n=3, seed=4)
        state = collect(model, data, options=CollectOptions(mode="two-pass", num_bins=4096))
        assert list(state.histograms) == ["x", "a", "y"]
        assert all(h.nonfinite == 0 for h in state.histograms.values())
        _assert_matches_reference(model, data, state)


def test_input_of_unknown_rank_takes_batches_and_arrays():
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    data = _data((2, 3, 5))
    state = collect(model, data, options=CollectOptions(mode="two-pass"))
    _assert_matches_reference(model, data, state)
    arrays = np.concatenate([b["x"] for b in data])
    from_arrays = collect(model, arrays, batch_size=2, options=CollectOptions(mode="two-pass"))
    assert from_arrays.num_batches == 2
    for name, hist in state.histograms.items():
        other = from_arrays.histograms[name]
        assert (other.range_max, other.count) == (hist.range_max, hist.count)
        assert np.array_equal(other.counts, hist.counts)
