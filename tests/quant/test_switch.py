"""The switch model answers like the Q/DQ model insert-qdq writes for the same float layers."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnx2trt_lib.calib._threads import ort_threads
from onnx2trt_lib.quant.accuracy import run
from onnx2trt_lib.quant.qdq import insert_qdq
from onnx2trt_lib.quant.switch import SwitchSession, quantized_layers


def residual_model() -> onnx.ModelProto:
    """conv1 -> relu -> conv2 + identity (residual Add) -> conv3, conv4 -> Add(conv3, conv4) -> gemm."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.4

    inits = [
        nh.from_array(w(4, 3, 3, 3), "w1"),
        nh.from_array(w(4, 4, 3, 3), "w2"),
        nh.from_array(w(4, 4, 3, 3), "w3"),
        nh.from_array(w(4, 4, 1, 1), "w4"),
        nh.from_array(w(4 * 8 * 8, 10), "wg"),
        nh.from_array(np.array([1, 4 * 8 * 8], np.int64), "flat"),
    ]
    p = [1, 1, 1, 1]
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=p),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=p),
        h.make_node("Add", ["c2", "r1"], ["a1"], name="add1"),
        h.make_node("Conv", ["a1", "w3"], ["c3"], name="conv3", pads=p),
        h.make_node("Conv", ["a1", "w4"], ["c4"], name="conv4"),
        h.make_node("Add", ["c3", "c4"], ["a2"], name="add2"),
        h.make_node("Reshape", ["a2", "flat"], ["f"], name="flatten"),
        h.make_node("MatMul", ["f", "wg"], ["y"], name="gemm"),
    ]
    graph = h.make_graph(
        nodes,
        "res",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 10])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_every_float_subset_matches_the_written_model():
    model = residual_model()
    x = np.random.default_rng(1).standard_normal((3, 1, 3, 8, 8)).astype(np.float32)
    batches = [{"x": b} for b in x]
    names = ["x", "r1", "c1", "c2", "c3", "c4", "a1", "f"]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    values = run(m, batches, extra_outputs=names)
    ranges = {n: float(np.abs(np.concatenate(values[n])).max()) * 0.7 for n in names}
    options = dict(ranges=ranges)
    full = insert_qdq(model, **options)[0]
    layers = quantized_layers(full)
    assert layers == ["conv1", "conv2", "conv3", "conv4", "gemm"]
    switch = SwitchSession(full, layers, ranges)
    fp32 = np.concatenate(run(model, batches)["y"])
    seen = set()
    for k in range(len(layers) + 1):
        for floats in itertools.combinations(layers, k):
            written = insert_qdq(model, exclude_nodes=list(floats), **options)[0]
            want = np.concatenate(run(written, batches)["y"])
            got = switch.run([c for c in layers if c not in floats], batches)["y"]
            # float sums in another order only: 1e-6 of the output scale
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.abs(want).max()))
            seen.add(round(float(np.abs(want - fp32).max()), 6))
    assert len(seen) > 16  # the subsets really differ from one another


def test_input_model_is_not_changed():
    model = residual_model()
    before = model.SerializeToString()
    full = insert_qdq(model, ranges=dict.fromkeys(["x", "r1", "a1", "f", "c3"], 2.0))[0]
    full_bytes = full.SerializeToString()
    SwitchSession(full, quantized_layers(full), {"x": 2.0})
    assert model.SerializeToString() == before and full.SerializeToString() == full_bytes


def test_runs_side_by_side_give_each_mix_its_own_outputs():
    """run_each (two runs at a time on single-threaded sessions) returns, per mix and feed, the
    bytes of one run at a time; accuracy.run with workers too."""
    model = residual_model()
    x = np.random.default_rng(2).standard_normal((5, 1, 3, 8, 8)).astype(np.float32)
    feeds = [{"x": b} for b in x]
    ranges = {n: 2.0 for n in ["x", "r1", "c1", "c2", "c3", "c4", "a1", "f"]}
    full = insert_qdq(model, ranges=ranges)[0]
    layers = quantized_layers(full)
    switch = SwitchSession(full, layers, ranges)
    assert switch.workers == min(2, ort_threads())
    mixes = [layers, [], layers[:2], layers[3:], [layers[1]]]
    each = switch.run_each(mixes, feeds)
    for mix, outs in zip(mixes, each, strict=True):
        for feed, out in zip(feeds, outs, strict=True):
            np.testing.assert_array_equal(out["y"], switch.run_batch(mix, feed)["y"])
    one, two = run(model, feeds), run(model, feeds, workers=2)
    for a, b in zip(one["y"], two["y"], strict=True):
        np.testing.assert_array_equal(a, b)
