"""compare(): statistics against plain numpy, verdicts, worst elements; FP32 vs perturbed/FP16/QDQ models."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.errors import RuntimeExecutionError
from onnx2trt_lib.runtime import OrtRunner, compare
from onnx2trt_lib.runtime.base import Runner, TensorSpec


class ArrayRunner(Runner):
    """Returns fixed outputs (one dict per call, cycling): lets tests choose exact differences."""

    def __init__(self, name: str, *outputs: Mapping[str, np.ndarray]) -> None:
        self.name = name
        self._results = list(outputs)
        self._calls = 0
        first = self._results[0]
        self._outputs = tuple(
            TensorSpec(k, np.asarray(v).dtype, np.asarray(v).shape) for k, v in first.items()
        )

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("x", np.dtype(np.float32), (1,)),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        result = self._results[self._calls % len(self._results)]
        self._calls += 1
        return {k: np.asarray(v) for k, v in result.items()}


FEED = {"x": np.zeros(1, np.float32)}


def test_identical_passes_with_zero_tolerance() -> None:
    y = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    report = compare(
        ArrayRunner("a", {"y": y}), ArrayRunner("b", {"y": y.copy()}), FEED, atol=0, rtol=0
    )
    assert report.passed
    out = report["y"]
    assert (out.max_abs, out.max_rel, out.mismatches, out.total) == (0.0, 0.0, 0, 12)
    assert out.cosine == pytest.approx(1.0)


def test_worst_elements_and_counts() -> None:
    b = np.zeros((4, 5), np.float32) + 1.0
    a = b.copy()
    a[2, 3] += 0.5  # worst
    a[0, 1] -= 0.1  # second
    a[3, 4] += 1e-7  # within tolerance
    report = compare(
        ArrayRunner("a", {"y": a}), ArrayRunner("b", {"y": b}), FEED, atol=1e-5, rtol=0, top_k=3
    )
    out = report["y"]
    assert not report.passed and not out.passed
    assert out.mismatches == 2 and out.total == 20
    assert [w.index for w in out.worst[:2]] == [(2, 3), (0, 1)]
    assert out.worst[0].a == pytest.approx(1.5) and out.worst[0].b == pytest.approx(1.0)
    assert out.max_abs == pytest.approx(0.5) and out.max_rel == pytest.approx(0.5)
    text = str(report)
    assert "FAIL y [4, 5]" in text and "worst at feed 0 [2, 3]" in text and text.endswith("FAILED")
    html = report._repr_html_()
    assert "FAILED" in html and "<table>" in html and "[2, 3]" in html
    json.dumps(report.to_dict())  # serialisable for --json


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
    atol=st.sampled_from([0.0, 1e-6, 1e-3, 0.1]),
    rtol=st.sampled_from([0.0, 1e-4, 1e-2]),
)
def test_statistics_match_numpy(data, shape, atol: float, rtol: float) -> None:
    floats = st.floats(-1e3, 1e3, width=32, allow_nan=False)
    b = data.draw(hnp.arrays(np.float32, shape, elements=floats))
    noise = data.draw(
        hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1e-7, 1e-4, 0.05, 3.0]))
    )
    a = (b + noise).astype(np.float32)
    report = compare(
        ArrayRunner("a", {"y": a}), ArrayRunner("b", {"y": b}), FEED, atol=atol, rtol=rtol
    )
    out = report["y"]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    close = np.isclose(a64, b64, atol=atol, rtol=rtol)
    assert out.passed == bool(close.all())
    assert out.mismatches == int((~close).sum())
    assert out.max_abs == pytest.approx(float(np.abs(a64 - b64).max()))
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na > 0 and nb > 0:
        assert out.cosine == pytest.approx(float(a64.ravel() @ b64.ravel() / (na * nb)), abs=1e-9)
    assert out.worst[0].abs_err == pytest.approx(out.max_abs)


def test_nan_and_inf_handling() -> None:
    b = np.array([1.0, np.nan, np.inf, 2.0], np.float32)
    same = compare(
        ArrayRunner("a", {"y": b.copy()}), ArrayRunner("b", {"y": b}), FEED, atol=0, rtol=0
    )
    assert same.passed
    a = b.copy()
    a[0] = np.nan
    report = compare(ArrayRunner("a", {"y": a}), ArrayRunner("b", {"y": b}), FEED)
    assert not report.passed and "NaN in one output only, first at [0]" in report["y"].reason


def test_shape_mismatch_missing_output_and_bad_args() -> None:
    a = ArrayRunner("a", {"y": np.zeros((2, 3)), "only_a": np.zeros(1)})
    b = ArrayRunner("b", {"y": np.zeros((3, 2))})
    report = compare(a, b, FEED)
    assert not report.passed
    assert "shape [2, 3] vs [3, 2]" in report["y"].reason
    assert report["only_a"].reason == "only runner A has this output"
    with pytest.raises(RuntimeExecutionError, match="no input data"):
        compare(a, b, [])
    with pytest.raises(RuntimeExecutionError, match="atol and rtol must be >= 0"):
        compare(a, b, FEED, atol=-1)


def test_several_feeds_accumulate() -> None:
    ref = np.ones(3, np.float32)
    a = ArrayRunner("a", {"y": ref}, {"y": ref + np.float32([0, 0, 0.25])}, {"y": ref})
    b = ArrayRunner("b", {"y": ref})
    report = compare(a, b, [FEED, FEED, FEED], atol=1e-3, rtol=0)
    out = report["y"]
    assert report.feeds == 3 and out.total == 9 and out.mismatches == 1
    assert (out.worst[0].feed, out.worst[0].index) == (1, (2,))


# --------------------------------------------------------------------- with ONNX Runtime


def test_model_vs_perturbed_copy(affine_model) -> None:
    scale = np.float32([1.0, 2.0, 3.0, 4.0])
    perturbed = scale.copy()
    perturbed[2] += 0.25
    ref = OrtRunner(affine_model(["N", 4], scale=scale), name="fp32")
    bad = OrtRunner(affine_model(["N", 4], scale=perturbed), name="perturbed")
    same = OrtRunner(affine_model(["N", 4], scale=scale.copy()), name="copy")
    x = {"x": np.ones((3, 4), np.float32)}
    assert compare(same, ref, x, atol=0, rtol=0).passed
    report = compare(bad, ref, x, atol=1e-4, rtol=1e-4)
    out = report["y"]
    assert not report.passed and out.mismatches == 3
    assert {w.index[1] for w in out.worst if w.abs_err > 0} == {2}
    assert out.max_abs == pytest.approx(0.25)


def _qdq_affine(scale: np.ndarray, q_scale: float) -> onnx.ModelProto:
    """x -> QuantizeLinear/DequantizeLinear (int8, per tensor) -> * scale + 0.5: what an INT8 engine sees."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "qs", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "qs", "zp"], ["xd"]),
        helper.make_node("Mul", ["xd", "scale"], ["xs"]),
        helper.make_node("Add", ["xs", "bias"], ["y"]),
    ]
    init = [
        numpy_helper.from_array(np.float32(q_scale), "qs"),
        numpy_helper.from_array(np.int8(0), "zp"),
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(np.float32(0.5), "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_fp32_vs_qdq_error_bounded_by_half_a_step(affine_model) -> None:
    scale = np.float32([0.5, -1.0, 2.0, 4.0])
    q = 0.02
    ref = OrtRunner(affine_model(["N", 4], scale=scale), name="fp32")
    qdq = OrtRunner(_qdq_affine(scale, q), name="qdq")
    x = (
        np.random.default_rng(3).uniform(-2.5, 2.5, (64, 4)).astype(np.float32)
    )  # inside int8 range 127*q
    bound = q / 2 * float(np.abs(scale).max())
    strict = compare(qdq, ref, {"x": x}, atol=0, rtol=0)
    assert not strict.passed
    assert 0 < strict["y"].max_abs <= bound * (1 + 1e-5)
    assert strict["y"].cosine > 0.999
    assert compare(qdq, ref, {"x": x}, atol=bound * 1.001, rtol=0).passed


def _float_weights(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Float32 weights wherever they live: initializers and Constant nodes (paddle2onnx uses those)."""
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [attr.t for attr in node.attribute if attr.name == "value"]
    return [t for t in tensors if t.data_type == TensorProto.FLOAT]


def _fp16_rounded(model: onnx.ModelProto) -> onnx.ModelProto:
    """Same graph, float weights rounded through float16 (what FP16 weight storage does to them)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in _float_weights(copy):
        arr = numpy_helper.to_array(tensor)
        tensor.CopyFrom(
            numpy_helper.from_array(arr.astype(np.float16).astype(np.float32), tensor.name)
        )
    return copy


def _perturb_largest(model: onnx.ModelProto, delta: float) -> tuple[onnx.ModelProto, str]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    target = max(
        (t for t in _float_weights(copy) if len(t.dims) == 4), key=lambda t: int(np.prod(t.dims))
    )
    arr = numpy_helper.to_array(target).copy()
    arr.flat[0] += delta
    target.CopyFrom(numpy_helper.from_array(arr, target.name))
    return copy, target.name


def test_real_model_fp32_vs_copy_fp16_weights_and_perturbed(ppocr) -> None:
    path = ppocr("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    model = onnx.load(path)
    x = {"x": np.random.default_rng(0).random((4, 3, 48, 192), dtype=np.float32)}
    ref = OrtRunner(path, name="fp32")
    assert compare(OrtRunner(model, name="copy"), ref, x, atol=0, rtol=0).passed

    fp16 = OrtRunner(_fp16_rounded(model), name="fp16-weights")
    loose = compare(fp16, ref, x, atol=1e-2, rtol=1e-2)
    assert loose.passed, str(loose)
    out = loose.outputs[0]
    assert 0 < out.max_abs < 1e-2 and out.cosine > 0.9999

    perturbed_model, name = _perturb_largest(model, 50.0)
    bad = compare(OrtRunner(perturbed_model, name="perturbed"), ref, x, atol=1e-3, rtol=1e-3)
    assert not bad.passed, f"perturbing {name} changed nothing"
    # the worst element really is the largest difference, recomputed independently
    a = OrtRunner(perturbed_model).infer(x)
    b = ref.infer(x)
    (key,) = b
    diff = np.abs(a[key].astype(np.float64) - b[key])
    worst = bad.outputs[0].worst[0]
    assert diff[worst.index] == pytest.approx(diff.max())


class _Recording(Runner):
    """Delegates to a runner and keeps the feeds it was given."""

    def __init__(self, runner: Runner) -> None:
        self.runner, self.name, self.feeds = runner, runner.name, []

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.runner.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.runner.outputs

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        return self.runner.infer(feed)


@pytest.mark.parametrize("order", ["fp16-first", "fp32-first"])
def test_fp16_io_twin_and_its_fp32_source_see_the_same_rounded_inputs(affine_model, order) -> None:
    """Both runners get the float16-rounded feed: 0.1 reaches the FP32 reference as 0.0999755859375."""
    fp32 = _Recording(OrtRunner(affine_model([4], scale=1.0, bias=0.0), name="fp32"))
    fp16 = _Recording(
        OrtRunner(affine_model([4], scale=1.0, bias=0.0, dtype=TensorProto.FLOAT16), name="fp16-io")
    )
    x = {"x": np.array([0.1, 0.2, 1 / 3, 1000.1], np.float32)}
    a, b = (fp16, fp32) if order == "fp16-first" else (fp32, fp16)
    report = compare(a, b, x, atol=0, rtol=0)  # identity models: only input rounding could differ
    assert report.passed, str(report)
    assert fp16.feeds[0]["x"].dtype == np.float16 and fp32.feeds[0]["x"].dtype == np.float32
    assert fp32.feeds[0]["x"][0] == np.float32(0.0999755859375)
    np.testing.assert_array_equal(fp32.feeds[0]["x"], fp16.feeds[0]["x"].astype(np.float32))
    assert x["x"][0] == np.float32(0.1)  # the caller's feed is not modified
