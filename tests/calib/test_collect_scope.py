"""How a collection runs: scope all/qdq, rearranging ops binned once, ignored NaN, overlap, threads."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.calib import Histogram, reference
from onnx2trt_lib.calib._threads import physical_cores
from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.collect import CollectOptions, _Collector, collect
from onnx2trt_lib.calib.dataset import open_source
from onnx2trt_lib.calib.tensors import quantizable_tensors, value_aliases
from onnx2trt_lib.errors import CalibrationError, UsageError
from onnx2trt_lib.quant import quantize


def token_model() -> onnx.ModelProto:
    """x -> Conv -> Relu -> Reshape -> Transpose -> MatMul -> Add(+ the transposed tokens) -> y."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0, 4, 36], np.int64), "flat_shape"),
        numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "proj"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["act"], name="relu"),
        helper.make_node("Reshape", ["act", "flat_shape"], ["flat"], name="reshape"),
        helper.make_node("Transpose", ["flat"], ["tokens"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "proj"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "tokens"], ["y"], name="residual"),
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 36, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def batches(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((3, 2, 6, 6)).astype(np.float32)} for _ in range(n)]


def ort_values(model: onnx.ModelProto, data, name: str) -> np.ndarray:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([name], batch)[0].ravel() for batch in data])


def same_state(a: Histogram, b: Histogram) -> bool:
    return a.range_max == b.range_max and a.count == b.count and np.array_equal(a.counts, b.counts)


def test_rearranging_ops_alias_their_source():
    model = token_model()
    names = quantizable_tensors(model)
    assert names == ["x", "conv", "act", "flat", "tokens", "mm", "y"]
    assert value_aliases(model, names) == {"flat": "act", "tokens": "act"}
    assert (
        value_aliases(model, ["x", "conv", "flat", "tokens"]) == {}
    )  # their source is not collected


@pytest.mark.parametrize("mode", ["two-pass", "single-pass"])
def test_aliases_are_not_fetched_and_get_the_histogram_of_their_own_values(mode):
    model, data = token_model(), batches(3, seed=1)
    collector = _Collector(model, open_source(data), {}, None, CollectOptions(mode=mode), None)
    assert (
        "flat" not in collector.fetch
        and "tokens" not in collector.fetch
        and "act" in collector.fetch
    )
    state = collect(model, data, options=CollectOptions(mode=mode, num_bins=256))
    assert list(state.histograms) == ["x", "conv", "act", "flat", "tokens", "mm", "y"]
    tokens = ort_values(model, data, "tokens")  # computed independently, not copied from 'act'
    hist = state.histograms["tokens"]
    assert hist is not state.histograms["act"]  # a copy: merging one must not touch the other
    assert hist.count == tokens.size and hist.amax_seen == np.abs(tokens).max()
    np.testing.assert_array_equal(
        hist.counts, reference.histogram(tokens, hist.bin_width, hist.num_bins)
    )


def test_qdq_scope_bins_only_the_quantized_inputs_with_the_same_histograms():
    model, data = token_model(), batches(3, seed=2)
    full = collect(model, data)
    qdq = collect(model, data, options=CollectOptions(scope="qdq"))
    # Conv input x; MatMul input tokens (also the residual Add's identity input)
    assert list(qdq.histograms) == ["x", "tokens"]
    for name, hist in qdq.histograms.items():
        assert same_state(hist, full.histograms[name]), name
    with pytest.raises(UsageError, match="scope"):
        collect(model, data, options=CollectOptions(scope="everything"))
    elementwise = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "relu",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    with pytest.raises(CalibrationError, match="scope qdq: the model has no float Conv"):
        collect(
            elementwise, [{"x": np.ones((3, 4), np.float32)}], options=CollectOptions(scope="qdq")
        )


@pytest.mark.parametrize("mode", ["two-pass", "single-pass"])
def test_overlap_gives_the_same_state(mode):
    model, data = token_model(), batches(5, seed=4)
    plain = collect(model, data, options=CollectOptions(mode=mode))
    ahead = collect(model, data, options=CollectOptions(mode=mode, overlap=True))
    assert list(plain.histograms) == list(ahead.histograms)
    for name in plain.histograms:
        assert same_state(plain.histograms[name], ahead.histograms[name]), name
    assert (ahead.num_batches, ahead.num_samples) == (plain.num_batches, plain.num_samples)


@pytest.mark.parametrize("threads", ["1", "3"])
def test_onnxruntime_gets_the_calibration_thread_count(monkeypatch, threads):
    # an explicit count: left at 0, ORT pins a worker per core (escaping taskset) and ran 1.5x slower
    monkeypatch.setenv("ONNX2TRT_CALIB_THREADS", threads)
    collector = _Collector(token_model(), open_source(batches(1)), {}, None, CollectOptions(), None)
    assert collector.session.get_session_options().intra_op_num_threads == int(threads)


@pytest.mark.parametrize("range_max", [None, 2.5])
def test_one_thread_and_many_threads_bin_identically(range_max):
    rng = np.random.default_rng(5)
    chunks = [rng.standard_normal(1_500_000).astype(np.float32) * s for s in (1.0, 4.0)]
    one, many = Histogram(512, range_max=range_max), Histogram(512, range_max=range_max)
    for chunk in chunks:
        one.update(chunk, threads=1)
        many.update(chunk, threads=4)
    assert same_state(one, many) and one.amax_seen == many.amax_seen and one.top == many.top


def test_qdq_scope_ranges_quantize_every_weighted_node(tmp_path):
    model, data = token_model(), batches(3, seed=6)
    out = tmp_path / "tokens.cache"
    result = calibrate(model, data, scope="qdq", output=out)
    assert set(result.amax) == {"x", "tokens"}
    qdq = quantize(model, result.amax, protect=False)
    assert qdq.missing_ranges == () and qdq.pass_result.skipped == ()
    assert qdq.pass_result.counts["quantized_nodes"] == 2
    # the scope is part of the cache key: a full calibration is not served from it
    full = calibrate(model, data, output=out)
    assert not full.cache_hit and len(full.amax) == 7


def test_two_pass_with_ignored_nan_bins_the_finite_values_and_keeps_exact_ranges():
    model = token_model()
    model.graph.node[1].op_type = "Log"  # log of negative conv outputs: NaN; of 0: -inf
    data = batches(2, seed=9)
    state = collect(model, data, options=CollectOptions(mode="two-pass", ignore_nonfinite=True))
    act = ort_values(model, data, "act")
    hist = state.histograms["act"]
    finite = act[np.isfinite(act)]
    assert hist.nonfinite == act.size - finite.size > 0 and hist.count == finite.size
    assert hist.amax_seen == np.abs(finite).max()
    assert hist.range_max == 2.0 ** np.ceil(np.log2(hist.amax_seen))
    assert state.histograms["conv"].range_max == 2.0 ** np.ceil(
        np.log2(np.abs(ort_values(model, data, "conv")).max())
    )  # exact range kept


def fake_topology(root, cores: dict[int, tuple[int, int]]) -> str:
    for cpu, (package, core) in cores.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return str(root)


def test_onnxruntime_threads_count_physical_cores_of_the_usable_cpus(tmp_path):
    # 2 packages x 2 cores x 2 hyperthreads; core ids repeat across packages
    sysfs = fake_topology(tmp_path, {cpu: (cpu // 4, (cpu // 2) % 2) for cpu in range(8)})
    assert physical_cores(set(range(8)), sysfs=sysfs) == 4
    assert physical_cores({0, 1}, sysfs=sysfs) == 1  # two hyperthreads of one core (taskset -c 0,1)
    assert physical_cores({0, 2, 4, 6}, sysfs=sysfs) == 4
    assert physical_cores({0, 1, 9}, sysfs=sysfs) == 3  # cpu9 unreadable: count CPUs instead
