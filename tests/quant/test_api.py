"""quantize / to_fp16 on a trained digits CNN: accuracy, TensorRT-RTX verdict, bad inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from digits_cnn import accuracy
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.errors import (
    CacheFormatError,
    CalibrationError,
    ModelLoadError,
    Onnx2TrtError,
    UsageError,
)
from onnx2trt_lib.quant import quantize, to_fp16
from onnx2trt_lib.quant.accuracy import run


def test_int8_accuracy_within_half_a_point_of_fp32(digits, digits_cache, tmp_path):
    model, data = digits
    before = model.SerializeToString()
    out = tmp_path / "q.onnx"
    result = quantize(model, digits_cache, protect=False, output=out)
    assert model.SerializeToString() == before  # input untouched
    assert result.pass_result.counts["quantized_nodes"] == 4 and not result.missing_ranges
    fp32 = accuracy(model, data["x_test"], data["y_test"])
    int8 = accuracy(onnx.load(out), data["x_test"], data["y_test"])
    assert fp32 > 0.95
    assert abs(fp32 - int8) <= 0.005, (fp32, int8)
    # every Conv/Gemm reads Q/DQ'd data and weights
    producers = {o: n.op_type for n in result.model.graph.node for o in n.output}
    for node in result.model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert producers[node.input[0]] == producers[node.input[1]] == "DequantizeLinear"


@pytest.mark.trt
def test_tensorrt_rtx_parses_and_builds_int8_and_fp16(digits, digits_ranges):
    trt = pytest.importorskip("tensorrt_rtx")
    model, _ = digits
    for candidate in (
        quantize(model, digits_ranges, protect=False).model,
        to_fp16(model).model,
        to_fp16(model, keep_io_types=True).model,
    ):
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse(candidate.SerializeToString()), [
            parser.get_error(i).desc() for i in range(parser.num_errors)
        ]
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        profile.set_shape(name, (1, 1, 8, 8), (8, 1, 8, 8), (32, 1, 8, 8))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        assert plan is not None and plan.nbytes > 0


def test_fp16_outputs_within_fp16_tolerance(digits):
    model, data = digits
    result = to_fp16(model)
    x = data["x_test"]
    ref = run(model, [{"x": x}])["logits"][0]
    got = run(result.model, [{"x": x.astype(np.float16)}])["logits"][0]
    assert got.dtype == np.float16
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(got.astype(np.float32), ref, atol=1e-2 * scale)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.998
    kept = to_fp16(model, keep_io_types=True, keep_ops=["Gemm"])
    assert [s.node for s in kept.kept] == ["fc"]
    got32 = run(kept.model, [{"x": x}])["logits"][0]
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, ref, atol=1e-2 * scale)


@pytest.mark.parametrize("strategy", ["bisect", "greedy"])
def test_protection_finds_the_layer_a_bad_range_breaks(strategy, digits, digits_ranges):
    model, data = digits
    ranges = dict(digits_ranges)
    ranges["r1"] /= 40  # conv2's input range far too small: heavy clipping
    held_out = data["x_train"][:256]
    plain = quantize(model, ranges, protect=False)
    fp32 = accuracy(model, data["x_test"], data["y_test"])
    assert accuracy(plain.model, data["x_test"], data["y_test"]) < fp32 - 0.05
    result = quantize(model, ranges, data=held_out, strategy=strategy)
    report = result.protection
    assert report.met and not report.before >= report.target
    assert [e.node for e in report.excluded] == ["conv2"]
    assert report.ranking[0][0] == "conv2"
    assert 0.5 < report.int8_mac_share_after < 1.0 and report.int8_mac_share_before == 1.0
    assert abs(accuracy(result.model, data["x_test"], data["y_test"]) - fp32) <= 0.005
    assert "conv2" in {s.node for s in result.pass_result.skipped}
    assert result.to_dict()["protection"]["excluded"][0]["node"] == "conv2"


def test_protection_with_a_user_metric(digits, digits_ranges):
    model, data = digits
    ranges = dict(digits_ranges)
    ranges["f"] /= 30

    def metric(candidate: onnx.ModelProto) -> float:
        return accuracy(candidate, data["x_calib"], data["y_calib"])

    result = quantize(model, ranges, data=data["x_train"][:128], metric=metric, allowed_drop=0.005)
    report = result.protection
    assert report.met and report.after >= metric(model) - 0.005
    assert "fc" in [e.node for e in report.excluded]


def test_full_int8_meeting_the_bound_excludes_nothing(digits, digits_ranges):
    model, data = digits
    result = quantize(model, digits_ranges, data=data["x_train"][:128])
    assert result.protection.met and result.protection.excluded == ()
    assert result.protection.evaluations == 1


def test_protect_without_data_is_skipped_with_a_note(digits, digits_ranges):
    model, _ = digits
    result = quantize(model, digits_ranges)
    assert result.protection is None and "protection skipped" in result.notes[0]


def test_missing_ranges_are_listed_or_refused(digits, digits_ranges, tmp_path):
    model, data = digits
    ranges = {k: v for k, v in digits_ranges.items() if k not in ("r1", "f")}
    result = quantize(model, ranges, protect=False)
    assert result.missing_ranges == ("r1", "f")
    assert {s.node for s in result.pass_result.skipped} == {"conv2", "fc"}
    out = tmp_path / "q.onnx"
    with pytest.raises(CalibrationError, match="r1, f"):
        quantize(model, ranges, protect=False, strict=True, output=out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cache_for_another_model_is_refused(digits, tmp_path):
    model, _ = digits
    out = tmp_path / "q.onnx"
    other = {f"/backbone/conv{i}/Conv_output_0": 1.0 for i in range(10)} | {"x": 1.0}
    with pytest.raises(CalibrationError, match="another model"):
        quantize(model, other, output=out)
    assert not out.exists()


def test_already_quantized_and_non_float_models_are_refused(digits, digits_ranges, tmp_path):
    model, _ = digits
    q = quantize(model, digits_ranges, protect=False).model
    with pytest.raises(UsageError, match="already quantized"):
        quantize(q, digits_ranges)
    with pytest.raises(UsageError, match="already quantized"):
        to_fp16(q)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"], name="mm")],
        "ints",
        [helper.make_tensor_value_info("a", TensorProto.INT32, [2, 2])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [2, 2])],
        initializer=[numpy_helper.from_array(np.eye(2, dtype=np.int32), "b")],
    )
    ints = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UsageError, match="float"):
        quantize(ints, {"a": 1.0})
    with pytest.raises(UsageError, match="no float32"):
        to_fp16(ints)
    fp16 = to_fp16(model).model
    with pytest.raises(UsageError, match="no float32"):
        to_fp16(fp16, output=tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_files_and_names(digits, digits_ranges, tmp_path):
    model, _ = digits
    with pytest.raises(ModelLoadError):
        quantize(tmp_path / "missing.onnx", digits_ranges)
    with pytest.raises(CacheFormatError):
        quantize(model, tmp_path / "missing.cache")
    bad = tmp_path / "bad.cache"
    bad.write_text("not a cache\n")
    with pytest.raises(CacheFormatError):
        quantize(model, bad)
    with pytest.raises(UsageError, match="no node named 'nope'"):
        quantize(model, digits_ranges, exclude=["nope"])
    with pytest.raises(Onnx2TrtError):
        quantize(model, digits_ranges, output=tmp_path)  # a directory


def test_user_exclusions(digits, digits_ranges):
    model, data = digits
    result = quantize(model, digits_ranges, exclude=["conv1"], exclude_tensors=["f"], protect=False)
    producers = {o: n.op_type for n in result.model.graph.node for o in n.output}
    nodes = {n.name: n for n in result.model.graph.node}
    assert producers.get(nodes["conv1"].input[0]) != "DequantizeLinear"
    assert producers.get(nodes["fc"].input[0]) != "DequantizeLinear"
    assert producers[nodes["conv2"].input[0]] == "DequantizeLinear"
