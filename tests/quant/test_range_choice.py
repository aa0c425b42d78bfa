"""quant.range_choice: Q/DQ ranges chosen per model by full INT8's agreement with FP32."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
from helpers import count_fp32_runs
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
    calls = count_fp32_runs(monkeypatch)
    monkeypatch.setattr(range_choice, "CANDIDATES", (CANDIDATES[0], ("max", "max", {})))
    model = spike_model()
    x = spike_data()
    data = [{"x": x[i : i + 8]} for i in range(0, len(x), 8)]
    cal = calibrate(model, data, method="entropy", keep_outputs=False)
    res = quantize_calibrated(model, cal, data)
    assert len(calls) == 1  # two candidates and the written model's measurement share it
    assert res.protection is not None and res.protection.before == 1.0  # max: every image agrees


def small_conv() -> onnx.ModelProto:
    """x (N, 2, 6, 6) -> Conv 3x3 -> Relu -> Conv 1x1 -> y (N, 3, 4, 4): rows do not mix."""
    rng = np.random.default_rng(1)
    graph = h.make_graph(
        [
            h.make_node("Conv", ["x", "w1"], ["c1"], name="c1"),
            h.make_node("Relu", ["c1"], ["r"], name="r"),
            h.make_node("Conv", ["r", "w2"], ["y"], name="c2"),
        ],
        "small",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 2, 6, 6])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 3, 4, 4])],
        [
            nh.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w1"),
            nh.from_array(rng.standard_normal((3, 4, 1, 1)).astype(np.float32), "w2"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_the_search_rows_fp32_outputs_are_cut_from_those_of_all_rows():
    """The range choice's FP32 outputs of the search rows are cut from the run on every row:
    the bytes a run of those rows gives; outputs without a row per input row are computed."""
    from onnx2trt_lib.quant.api import _first_rows_of
    from onnx2trt_lib.quant.protect import _split, fp32_outputs

    model = small_conv()
    x = np.random.default_rng(2).standard_normal((70, 2, 6, 6)).astype(np.float32)
    batches = [{"x": x[:32]}, {"x": x[32:64]}, {"x": x[64:]}]
    search, held = _split(batches, fixed=False)
    assert held and [len(b["x"]) for b in search] == [32, 3]  # a batch cut in two
    cut = _first_rows_of(fp32_outputs(model, batches), batches, search)
    want = fp32_outputs(model, search)
    assert cut is not None and [len(a) for a in cut["y"]] == [32, 3]
    for a, b in zip(cut["y"], want["y"], strict=True):
        np.testing.assert_array_equal(a, b)
    pooled = {"y": [np.zeros(3, np.float32) for _ in batches]}  # not a row per input row
    assert _first_rows_of(pooled, batches, search) is None


def test_with_held_out_rows_the_flow_still_runs_fp32_once(monkeypatch):
    """With rows held out, the candidates' FP32 outputs (the search rows) come from the one
    FP32 run of every row (it was a second run)."""
    calls = count_fp32_runs(monkeypatch)
    model = small_conv()
    x = np.random.default_rng(3).standard_normal((64, 2, 6, 6)).astype(np.float32)
    data = [{"x": x[i : i + 16]} for i in range(0, 64, 16)]
    cal = calibrate(model, data, method="entropy", keep_outputs=False)
    res = quantize_calibrated(model, cal, data)
    assert calls == [64]
    assert res.protection is not None and res.protection.held_out == 32
    assert any(n.startswith("Q/DQ ranges: ") and "search half" in n for n in res.notes)


def test_the_plain_search_reads_full_int8_of_the_search_rows_from_the_range_choice(monkeypatch):
    """The chosen candidate's full INT8 outputs on the search rows, measured by the range
    choice, reach the plain search (`known_full`): what ONNX Runtime gives for the Q/DQ model
    written without protection on those rows."""
    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")
    real = protect_module.protect
    given = []

    def recorded(*args, **kw):
        if kw.get("search", True):
            given.append(kw.get("known_full"))
        return real(*args, **kw)

    monkeypatch.setattr(protect_module, "protect", recorded)
    model = small_conv()
    x = np.random.default_rng(3).standard_normal((64, 2, 6, 6)).astype(np.float32)
    data = [{"x": x[i : i + 16]} for i in range(0, 64, 16)]
    cal = calibrate(model, data, method="entropy")
    quantize_calibrated(model, cal, data, compensate=False)
    assert len(given) == 1 and given[0] is not None
    full = quantize_calibrated(model, cal, data, compensate=False, protect=False).model
    from onnx2trt_lib.quant.accuracy import run

    np.testing.assert_array_equal(given[0]["y"], run(full, [{"x": x[:32]}])["y"][0])


def test_an_output_whose_row_length_varies_per_batch_is_not_cut_by_rows():
    """An integer output (N, K) whose K is each batch's own (padded to its largest count): the
    search rows' FP32 outputs are computed, not cut from the joined batches (np.concatenate
    refused them and the flow failed)."""
    from onnx2trt_lib.quant.api import _first_rows_of

    rng = np.random.default_rng(1)
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["y"], name="c1"),
        h.make_node("Greater", ["x", "thr"], ["g"], name="gt"),
        h.make_node("Cast", ["g"], ["gi"], to=T.INT64, name="cast"),
        h.make_node("ReduceSum", ["gi", "axes"], ["per"], keepdims=0, name="rsum"),
        h.make_node("ReduceMax", ["per"], ["k"], keepdims=1, name="rmax"),
        h.make_node("Shape", ["x"], ["xs"], start=0, end=1, name="shape"),
        h.make_node("Concat", ["xs", "k"], ["shp"], axis=0, name="cat"),
        h.make_node(
            "ConstantOfShape", ["shp"], ["pad"], value=nh.from_array(np.array([0], np.int64))
        ),
    ]
    graph = h.make_graph(
        nodes,
        "padded",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 2, 6, 6])],
        [
            h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 4, 4]),
            h.make_tensor_value_info("pad", T.INT64, ["N", "K"]),
        ],
        [
            nh.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w1"),
            nh.from_array(np.array(2.0, np.float32), "thr"),
            nh.from_array(np.array([1, 2, 3], np.int64), "axes"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    x = np.random.default_rng(5).standard_normal((64, 2, 6, 6)).astype(np.float32)
    data = [{"x": x[i : i + 16]} for i in range(0, 64, 16)]
    res = quantize_calibrated(model, calibrate(model, data), data)
    assert res.protection is not None and res.protection.held_out == 32
    kept = quantize_calibrated(model, calibrate(model, data, keep_outputs=True), data)
    assert kept.model.SerializeToString() == res.model.SerializeToString()
    varying = {"pad": [np.zeros((16, k), np.int64) for k in (7, 4, 5, 6)]}
    assert _first_rows_of(varying, data, data[:2]) is None


def mixed_model(opset: int, named: bool, batch) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Flatten -> Gemm -> MatMul; weighted nodes unnamed unless `named`."""
    rng = np.random.default_rng(1)
    name = (lambda s: s) if named else (lambda s: "")
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name=name("c1")),
        h.make_node("Relu", ["c1"], ["r"], name="r"),
        h.make_node("Conv", ["r", "w2"], ["c2"], name=name("c2")),
        h.make_node("Flatten", ["c2"], ["f"], name="flat"),
        h.make_node("Gemm", ["f", "w3"], ["g"], name=name("g")),
        h.make_node("MatMul", ["g", "w4"], ["y"], name=name("m")),
    ]
    graph = h.make_graph(
        nodes,
        "mixed",
        [h.make_tensor_value_info("x", T.FLOAT, [batch, 2, 6, 6])],
        [h.make_tensor_value_info("y", T.FLOAT, [batch, 5])],
        [
            nh.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w1"),
            nh.from_array(rng.standard_normal((3, 4, 1, 1)).astype(np.float32), "w2"),
            nh.from_array(rng.standard_normal((48, 8)).astype(np.float32) / 7, "w3"),
            nh.from_array(rng.standard_normal((8, 5)).astype(np.float32) / 3, "w4"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


@pytest.mark.parametrize("compensate", [None, True])
@pytest.mark.parametrize(("opset", "named", "batch"), [(17, True, "N"), (11, False, 16)])
def test_the_calibrated_flow_measures_the_layers_macs_once(
    monkeypatch, opset, named, batch, compensate
):
    """The range candidates and every search share one MAC count (it was one ONNX Runtime run
    with every layer's tensors exposed per protect call: 0.12 s each on PP-OCRv4 rec), also
    after opset conversion, for unnamed layers, a fixed batch and compensation; the reported
    INT8 share is the written model's."""
    from onnx2trt_lib.quant.accuracy import int8_mac_share

    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")
    real = protect_module.weighted_macs
    calls = []

    def counted(model, feed):
        calls.append(model)
        return real(model, feed)

    monkeypatch.setattr(protect_module, "weighted_macs", counted)
    model = mixed_model(opset, named, batch)
    x = np.random.default_rng(3).standard_normal((64, 2, 6, 6)).astype(np.float32)
    data = [{"x": x[i : i + 16]} for i in range(0, 64, 16)]
    cal = calibrate(model, data, method="entropy", keep_outputs=False)
    res = quantize_calibrated(
        model, cal, data, compensate=compensate, agreement="sqnr", min_sqnr=35.0
    )
    assert len(calls) == 1
    assert res.protection is not None
    macs = real(res.model, {"x": x[:16]})  # the written model: the same layers and shapes
    assert len(macs) == 4
    share = int8_mac_share(res.model, macs)
    assert res.protection.int8_mac_share_after == pytest.approx(share)


def test_quantize_reads_a_generator_of_feeds_once():
    """A one-pass iterable of feeds is read once: MACs, compensation and the search all see
    every row (the MAC count read it empty before the search, which then had no data)."""
    from onnx2trt_lib.quant.api import quantize

    model = small_conv()
    x = np.random.default_rng(5).standard_normal((64, 2, 6, 6)).astype(np.float32)
    ranges = dict(calibrate(model, [{"x": x}], method="max", keep_outputs=False).amax)
    feeds = [{"x": x[i : i + 16]} for i in range(0, 64, 16)]
    given = quantize(model, ranges, data=iter(feeds), criterion=None)
    listed = quantize(model, ranges, data=feeds, criterion=None)
    assert given.model.SerializeToString() == listed.model.SerializeToString()
    assert given.protection is not None and listed.protection is not None
    assert given.protection.to_dict() == listed.protection.to_dict()
    assert given.protection.samples == 64
