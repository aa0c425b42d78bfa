"""quant.accuracy: statistics against plain formulas, per-tensor SQNR ordering, reports, MAC shares."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from onnx2trt_lib.errors import UsageError
from onnx2trt_lib.quant import compare, quantize
from onnx2trt_lib.quant.accuracy import (
    OutputStats,
    as_batches,
    cosine,
    int8_mac_share,
    quantized_tensors,
    sqnr_db,
    weighted_macs,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 50), elements=finite), arrays(np.float32, 50, elements=finite)
)
def test_sqnr_and_cosine_match_plain_formulas(ref, noise):
    test = ref + noise[: ref.size] * 0.01
    signal = sum(float(v) ** 2 for v in ref)
    err = sum((float(a) - float(b)) ** 2 for a, b in zip(ref, test, strict=True))
    want = math.inf if err == 0 else (-math.inf if signal == 0 else 10 * math.log10(signal / err))
    got = sqnr_db(ref, test)
    assert got == want or math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    dot = sum(float(a) * float(b) for a, b in zip(ref, test, strict=True))
    na, nb = math.sqrt(signal), math.sqrt(sum(float(b) ** 2 for b in test))
    if na and nb:
        assert math.isclose(cosine(ref, test), dot / (na * nb), rel_tol=1e-9, abs_tol=1e-12)


def test_output_stats_edge_cases():
    zeros = np.zeros(4, np.float32)
    same = OutputStats.of("z", zeros, zeros)
    assert same.max_abs == 0 and same.sqnr_db == math.inf and same.cosine == 1.0
    off = OutputStats.of("o", np.array([1.0, -2.0]), np.array([1.5, -2.0]))
    assert off.max_abs == 0.5 and off.max_rel == 0.25
    with pytest.raises(UsageError, match="shapes differ"):
        OutputStats.of("s", np.zeros(2), np.zeros(3))


def test_compare_reports_worst_tensor_first(digits, digits_ranges):
    model, data = digits
    ranges = dict(digits_ranges)
    ranges["r1"] /= 40  # one badly clipped tensor
    q = quantize(model, ranges, protect=False).model
    report = compare(
        model,
        q,
        data["x_test"],
        metric=lambda out: float((out["logits"].argmax(1) == data["y_test"]).mean()),
    )
    assert [t.name for t in report.tensors][0] == "r1"
    values = [t.sqnr_db for t in report.tensors]
    assert values == sorted(values) and set(t.name for t in report.tensors) == {
        "x",
        "r1",
        "r2",
        "f",
    }
    assert report.outputs[0].name == "logits" and report.outputs[0].cosine < 0.999
    assert report.metric["drop"] > 0.05
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["tensors"][0]["name"] == "r1"
    assert "<table>" in report._repr_html_() and "r1" in "\n".join(report.summary_lines())
    # the same model against itself: exact
    self_report = compare(model, model, data["x_test"][:10])
    assert self_report.outputs[0].max_abs == 0 and self_report.tensors == ()


def test_quantized_tensors_skip_weights(digits, digits_ranges):
    model, _ = digits
    q = quantize(model, digits_ranges, protect=False).model
    found = quantized_tensors(q)
    assert set(found) == {"x", "r1", "r2", "f"}
    assert found["r2"][1] == ("Conv", "Add")


def test_macs_match_hand_count(digits, digits_ranges):
    model, data = digits
    macs = weighted_macs(model, {"x": data["x_test"][:1]})
    # conv1: 8x8x8 outputs x 1*3*3; conv2: 16x4x4 x 8*3*3; conv3: 16x4x4 x 16*3*3; fc: 10 x 256
    assert macs == {"conv1": 8 * 64 * 9, "conv2": 256 * 72, "conv3": 256 * 144, "fc": 2560}
    q = quantize(model, digits_ranges, exclude=["conv3"], protect=False).model
    assert int8_mac_share(q, macs) == pytest.approx(1 - 256 * 144 / sum(macs.values()))


def test_as_batches_forms(digits):
    model, data = digits
    x = data["x_test"][:130]
    batches = as_batches(x, model, batch_size=64)
    assert [len(b["x"]) for b in batches] == [64, 64, 2]
    assert len(as_batches({"x": x}, model)) == 1
    assert len(as_batches([{"x": x[:5]}, {"x": x[5:9]}], model)) == 2
    with pytest.raises(UsageError):
        as_batches([], model)
