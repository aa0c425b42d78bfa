"""quant.range_choice: Q/DQ ranges chosen per model by full INT8's agreement with FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.quant import range_choice
from onnx2trt_lib.quant.api import quantize_calibrated
from onnx2trt_lib.quant.range_choice import CANDIDATES, RangeChoice, choose

SIDE = 512  # one spike in SIDE**2 values: rare enough that the least-error range clips it


def spike_model() -> onnx.ModelProto:
    """Conv 1x1 (weight 1) -> [max over the image, 20]: class 0 iff the image holds a +30 spike."""
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        h.make_node("ReduceMax", ["c"], ["hi"], name="hi", axes=[1, 2, 3], keepdims=0),
        h.make_node("Unsqueeze", ["hi", "ax"], ["hi1"], name="u1"),
        h.make_node("Mul", ["hi1", "zero"], ["z"], name="mul"),
        h.make_node("Add", ["z", "twenty"], ["t"], name="add"),
        h.make_node("Concat", ["hi1", "t"], ["y"], name="cat", axis=1),
    ]
    graph = h.make_graph(
        nodes,
        "spike",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, SIDE, SIDE])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 2])],
        [
            nh.from_array(np.ones((1, 1, 1, 1), np.float32), "w"),
            nh.from_array(np.array([1], np.int64), "ax"),
            nh.from_array(np.array(0.0, np.float32), "zero"),
            nh.from_array(np.array(20.0, np.float32), "twenty"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def spike_data(rows: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 1, SIDE, SIDE)).astype(np.float32)
    for i in range(rows):  # one +-30 per image, half of each sign
        x[i, 0, rng.integers(SIDE), rng.integers(SIDE)] = 30.0 if i % 2 else -30.0
    return x


def input_scale(model: onnx.ModelProto) -> float:
    """Scale of the QuantizeLinear that reads the model input."""
    inits = {i.name: nh.to_array(i) for i in model.graph.initializer}
    consts = {
        n.output[0]: nh.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant"
    }
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    return float({**inits, **consts}[q.input[1]])


def test_choose_takes_the_highest_and_keeps_the_first_on_ties():
    cands = [("a", {"t": 1.0}), ("b", {"t": 2.0}), ("c", {"t": 3.0})]
    values = {1.0: 0.5, 2.0: 0.9, 3.0: 0.9}
    got = choose(cands, lambda r: (values[r["t"]], f"{values[r['t']]:.0%}"))
    assert got.chosen == "b" and got.ranges == {"t": 2.0}
    assert got.scores == (("a", "50%"), ("b", "90%"), ("c", "90%"))
    tie = choose(cands[1:], lambda r: (0.9, "90%"))
    assert tie.chosen == "b"
    with pytest.raises(ValueError):
        choose([], lambda r: (0.0, ""))


def test_the_default_candidates_are_mse_first_then_a_high_percentile():
    assert [c[1] for c in CANDIDATES] == ["mse", "percentile"]
    assert CANDIDATES[1][2] == {"percentile": 99.999}


def test_calibrated_flow_keeps_the_range_that_agrees_and_says_so(monkeypatch):
    # mse clips the one spike per image below 20 (the least error for values up to 30), so full
    # INT8 reads every image as class 1; max keeps the spike
    monkeypatch.setattr(range_choice, "CANDIDATES", (CANDIDATES[0], ("max", "max", {})))
    model = spike_model()
    x = spike_data()
    data = [{"x": x[i : i + 8]} for i in range(0, len(x), 8)]
    cal = calibrate(model, data, method="entropy")
    mse = cal.state.compute_amax("mse")["x"]
    assert mse < 20  # the premise: the least-error range clips the spike
    res = quantize_calibrated(model, cal, data, protect=False)
    note = next(n for n in res.notes if n.startswith("Q/DQ ranges"))
    assert note.startswith("Q/DQ ranges: max,") and "mse 50.00%" in note and "max 100.00%" in note
    # the written scale is max|x| / 127 of the raw values (independent of the histograms)
    assert input_scale(res.model) == pytest.approx(float(np.abs(x).max()) / 127, rel=1e-6)
    assert res.protection.before == 1.0


def test_calibrated_flow_keeps_mse_when_it_agrees_as_well():
    model = spike_model()
    x = spike_data()
    x[:, :, :, :] = np.where(np.abs(x) > 10, 0.0, x)  # no spikes: every candidate agrees
    x[:, 0, 0, 0] = np.where(np.arange(len(x)) % 2, 3.0, -3.0)
    data = [{"x": x[i : i + 8]} for i in range(0, len(x), 8)]
    cal = calibrate(model, data, method="entropy")
    res = quantize_calibrated(model, cal, data, protect=False)
    choice_note = next(n for n in res.notes if n.startswith("Q/DQ ranges"))
    assert choice_note.startswith("Q/DQ ranges: mse,")
    assert input_scale(res.model) == pytest.approx(cal.state.compute_amax("mse")["x"] / 127)


def test_a_named_method_is_used_as_it_is():
    model = spike_model()
    x = spike_data(8)
    cal = calibrate(model, [{"x": x}], method="max")
    res = quantize_calibrated(model, cal, [{"x": x}], method="max", protect=False)
    assert any(n.startswith("Q/DQ ranges: the cache's (max; as asked)") for n in res.notes)
    note = RangeChoice("mse", {}, (("mse", "90.00%"), ("max", "80.00%"))).note()
    assert note.startswith("Q/DQ ranges: mse,") and "(mse 90.00%, max 80.00%;" in note


def test_the_calibrated_flow_runs_fp32_once_for_all_its_measurements(monkeypatch):
    """Each range candidate and the written model's measurement compare with the same FP32
    outputs: one FP32 run (it was one per measurement)."""
    import importlib

    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")  # not the function

    calls = []
    real = protect_module.fp32_outputs

    def counted(model, data):
        calls.append(len(data))
        return real(model, data)

    monkeypatch.setattr(protect_module, "fp32_outputs", counted)
    monkeypatch.setattr(range_choice, "CANDIDATES", (CANDIDATES[0], ("max", "max", {})))
    model = spike_model()
    x = spike_data()
    data = [{"x": x[i : i + 8]} for i in range(0, len(x), 8)]
    cal = calibrate(model, data, method="entropy")
    res = quantize_calibrated(model, cal, data)
    assert len(calls) == 1  # two candidates and the written model's measurement share it
    assert res.protection is not None and res.protection.before == 1.0  # max: every image agrees
