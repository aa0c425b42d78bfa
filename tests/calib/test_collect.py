"""Activation collection: which tensors, streamed histograms vs a plain reference, NaN/Inf, state."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.calib import Histogram, reference
from onnx2trt_lib.calib.collect import CollectOptions, collect
from onnx2trt_lib.calib.state import CalibrationState
from onnx2trt_lib.calib.tensors import quantizable_tensors
from onnx2trt_lib.errors import CalibrationError, UsageError


def small_model(op: str = "Relu") -> onnx.ModelProto:
    """x -> Conv -> {op} -> Mul(const chain) -> y, plus an int64 Shape branch and a constant-only Add."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.full((1,), 0.5, np.float32), "c0"),
        numpy_helper.from_array(np.full((1,), 1.5, np.float32), "c1"),
    ]
    nodes = [
        helper.make_node(
            "Add", ["c0", "c1"], ["c_sum"], name="const_add"
        ),  # constant: not an activation
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(op, ["conv"], ["act"], name="act"),
        helper.make_node("Mul", ["act", "c_sum"], ["y"], name="mul"),
        helper.make_node("Shape", ["conv"], ["shape"], name="shape"),  # int64: never quantized
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 6, 6])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("shape", TensorProto.INT64, None),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def batches(n: int, seed: int = 0, scale: float = 1.0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((2, 2, 6, 6)) * scale).astype(np.float32)} for _ in range(n)]


def activations_by_ort(model: onnx.ModelProto, data, names):
    """Independent collection: plain ORT, every value of every named tensor kept in memory."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.extend(
        onnx.ValueInfoProto(name=n) for n in names if n not in {o.name for o in model.graph.output}
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    out = {n: [] for n in names}
    for batch in data:
        fetch = [n for n in names if n != "x"]
        for n, value in zip(fetch, session.run(fetch, batch), strict=True):
            out[n].append(value.ravel())
        if "x" in names:
            out["x"].append(batch["x"].ravel())
    return {n: np.concatenate(v) for n, v in out.items()}


def test_quantizable_tensors_skip_constants_and_integers():
    model = small_model()
    assert quantizable_tensors(model) == ["x", "conv", "act", "y"]  # shape is declared int64
    assert quantizable_tensors(model, include_inputs=False)[0] == "conv"
    assert quantizable_tensors(model, include=["act"]) == ["act"]
    assert quantizable_tensors(model, exclude=["y"]) == ["x", "conv", "act"]
    del model.graph.output[1]  # untyped: ONNX Runtime settles the type at run time
    with pytest.raises(UsageError, match="not float activations"):
        quantizable_tensors(model, include=["c_sum"])
    state = collect(model, batches(2))
    assert list(state.histograms) == ["x", "conv", "act", "y"]  # ORT says shape is int64


@pytest.mark.parametrize("mode", ["two-pass", "single-pass"])
def test_histograms_equal_the_reference_on_the_same_activations(mode):
    model, data = small_model(), batches(3, seed=1)
    state = collect(model, data, options=CollectOptions(mode=mode, num_bins=256))
    values = activations_by_ort(model, data, list(state.histograms))
    for name, hist in state.histograms.items():
        a = np.abs(values[name])
        assert hist.count == a.size and hist.amax_seen == a.max()
        if mode == "two-pass":
            # exact range: the power of two at or above the |max| over all the data
            assert a.max() <= hist.range_max < 2 * a.max()
            assert math.frexp(hist.range_max)[0] == 0.5
        np.testing.assert_array_equal(
            hist.counts, reference.histogram(values[name], hist.bin_width, hist.num_bins)
        )
        expected, _, _ = reference.entropy_threshold(
            reference.histogram(values[name], hist.bin_width, 256), hist.bin_width
        )
        assert hist.compute_amax("entropy") == pytest.approx(expected, rel=1e-12)


def test_nan_and_inf_name_the_tensor_unless_ignored():
    model = small_model(op="Log")  # log of negative conv outputs -> NaN, of 0 -> -inf
    with pytest.raises(CalibrationError, match=r"tensor 'act' has NaN or Inf") as info:
        collect(model, batches(2))
    assert "--ignore-nonfinite" in str(info.value)
    for mode in ("two-pass", "single-pass"):
        state = collect(model, batches(2), options=CollectOptions(mode=mode, ignore_nonfinite=True))
        assert state.histograms["act"].nonfinite > 0 and state.histograms["act"].count > 0


def test_model_without_float_tensors_is_refused():
    graph = helper.make_graph(
        [helper.make_node("Add", ["i", "i"], ["o"])],
        "ints",
        [helper.make_tensor_value_info("i", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("o", TensorProto.INT64, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CalibrationError, match="no floating-point activations"):
        collect(model, [{"i": np.ones((1, 4), np.int64)}])


def test_bad_batches_are_reported():
    with pytest.raises(CalibrationError, match="batch 1: input 'x' is 2x3x6x6"):
        collect(small_model(), [batches(1)[0], {"x": np.zeros((2, 3, 6, 6), np.float32)}])
    with pytest.raises(CalibrationError, match="no array for input 'x'"):
        collect(small_model(), [{"z": np.zeros((2, 2, 6, 6), np.float32)}])
    with pytest.raises(CalibrationError, match="gave no batches"):
        collect(small_model(), [])


def test_a_generator_can_run_exact_mode_in_its_one_read():
    exact = CollectOptions(mode="two-pass")
    streamed = collect(small_model(), (b for b in batches(3, seed=5)), options=exact)
    listed = collect(small_model(), batches(3, seed=5)[::-1], options=exact)
    assert streamed.mode == "two-pass" and streamed.exact
    assert streamed.histograms == listed.histograms  # and the order does not matter
    auto = collect(small_model(), (b for b in batches(3, seed=5)))
    assert auto.mode == "two-pass" and auto.histograms == listed.histograms  # 'auto' is exact


def test_generator_runs_exact_mode_and_progress_is_reported():
    seen = []
    state = collect(small_model(), (b for b in batches(3)), progress=lambda *a: seen.append(a))
    assert state.mode == "two-pass" and state.num_batches == 3 and state.num_samples == 6
    assert seen == [("collect", 1, None), ("collect", 2, None), ("collect", 3, None)]
    seen.clear()
    collect(small_model(), batches(2), progress=lambda *a: seen.append(a))
    # exact (two-pass) mode reads the data once too: one ONNX Runtime run per batch
    assert seen == [("collect", 1, 2), ("collect", 2, 2)]


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_state_saves_loads_and_merges_exactly(tmp_path, suffix):
    model = small_model()
    part_a, part_b = batches(2, seed=3), batches(2, seed=4, scale=3.0)  # part b grows the range
    single = CollectOptions(mode="single-pass")
    whole = collect(model, part_a + part_b, options=single)
    first = collect(model, part_a, options=single)
    first.save(tmp_path / f"a{suffix}")
    loaded = CalibrationState.load(tmp_path / f"a{suffix}")
    assert loaded.histograms == first.histograms and loaded.num_samples == 4
    second = collect(model, part_b, options=single, initial_ranges=loaded.ranges())
    merged = loaded.merge(second)
    assert merged.num_samples == 8
    for name, hist in whole.histograms.items():
        assert merged.histograms[name] == hist  # same counts, range, stats as one run over all data
    assert merged.compute_amax("entropy") == whole.compute_amax("entropy")


def test_corrupt_state_file(tmp_path):
    (tmp_path / "s.json").write_text('{"format": "other"}')
    with pytest.raises(CalibrationError, match="not a saved onnx2trt state"):
        CalibrationState.load(tmp_path / "s.json")
    with pytest.raises(CalibrationError, match="no such file"):
        CalibrationState.load(tmp_path / "none.npz")


def test_histogram_type_is_the_engine_one():
    state = collect(small_model(), batches(1))
    assert all(isinstance(h, Histogram) for h in state.histograms.values())


class _CountingBatches:
    """A re-readable batch list that counts how many batches were read."""

    def __init__(self, data):
        self.data, self.reads = data, 0

    def __iter__(self):
        for batch in self.data:
            self.reads += 1
            yield batch


@pytest.mark.parametrize(("num_batches", "overlap"), [(1, False), (3, False), (3, True), (4, True)])
def test_two_pass_runs_each_batch_once_and_bins_into_the_pow2_range_of_all_data(
    monkeypatch, num_batches, overlap
):
    from onnx2trt_lib.calib import collect as collect_module

    runs = []
    real = collect_module._Collector._activations

    def counted(self, feeds):
        runs.append(float(feeds["x"].sum()))
        return real(self, feeds)

    monkeypatch.setattr(collect_module._Collector, "_activations", counted)
    data = batches(num_batches, seed=7)
    source = _CountingBatches(data)
    state = collect(
        small_model(),
        source,
        options=CollectOptions(mode="two-pass", num_bins=256, overlap=overlap),
    )
    # one read: every batch runs once, in order (ranges grow by exact doubling instead of a pass 1)
    assert len(runs) == num_batches and source.reads == num_batches
    assert runs == [float(b["x"].sum()) for b in data]
    assert state.num_batches == num_batches and state.num_samples == 2 * num_batches
    monkeypatch.setattr(collect_module._Collector, "_activations", real)
    values = activations_by_ort(small_model(), data, list(state.histograms))
    for name, hist in state.histograms.items():
        assert hist.range_max == 2.0 ** np.ceil(np.log2(np.abs(values[name]).max()))
        np.testing.assert_array_equal(
            hist.counts, reference.histogram(values[name], hist.bin_width, 256)
        )


@pytest.mark.parametrize("overlap", [False, True])
def test_exact_mode_runs_big_batches_in_parts_with_the_same_histograms(monkeypatch, overlap):
    """A batch whose exposed activations pass RUN_BYTES runs in parts (FIRST_ROWS first, then
    rows of about RUN_BYTES): the same values, so the same exact histograms and counts; single-pass
    (its first batch sets the ranges) runs whole batches."""
    from onnx2trt_lib.calib import collect as collect_module

    rng = np.random.default_rng(5)
    data = [{"x": rng.standard_normal((n, 2, 6, 6)).astype(np.float32)} for n in (7, 5, 1, 6)]
    options = CollectOptions(mode="two-pass", num_bins=256, overlap=overlap)
    whole = collect(small_model(), data, options=options)
    runs: list[int] = []
    real = collect_module._Collector._activations

    def counted(self, feeds):
        runs.append(len(feeds["x"]))
        return real(self, feeds)

    monkeypatch.setattr(collect_module._Collector, "_activations", counted)
    # a row of small_model exposes conv, act and y, 4*6*6 float32 each (x is fed, not counted)
    monkeypatch.setattr(collect_module, "RUN_BYTES", 3 * (3 * 4 * 6 * 6 * 4))
    monkeypatch.setattr(collect_module, "FIRST_ROWS", 2)
    parts = collect(small_model(), data, options=options)
    assert runs == [2, 3, 2, 3, 2, 1, 3, 3]
    assert parts.histograms == whole.histograms
    assert (
        (parts.num_batches, parts.num_samples) == (whole.num_batches, whole.num_samples) == (4, 19)
    )
    runs.clear()
    collect(small_model(), data, options=CollectOptions(mode="single-pass", num_bins=256))
    assert runs == [7, 5, 1, 6]
