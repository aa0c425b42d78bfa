"""Exact (two-pass) mode reads the data once: power-of-two ranges grown by exact doubling give the
same histograms, caches, ranges and states as a first pass for the max and a second pass into the
fixed range [0, pow2_ceil(max)] (the route it replaced, still reachable through range_pass)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnx2trt_lib.calib import reference
from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.collect import CollectOptions, _Collector, collect
from onnx2trt_lib.calib.dataset import open_source
from onnx2trt_lib.calib.histogram import Histogram, pow2_ceil

from .test_deterministic import _model, _samples

_POWERS = [2.0**e for e in range(-6, 7)]


def _batches(dtype):
    # values on and next to powers of two (the edges doubling moves), zeros, negatives, NaN/Inf
    element = st.one_of(
        st.sampled_from([0.0, *_POWERS, *(-p for p in _POWERS), np.nan, np.inf]),
        st.floats(-100, 100, width=32 if dtype != np.float16 else 16),
    )
    return st.lists(
        hnp.arrays(dtype, st.integers(1, 300), elements=element), min_size=1, max_size=6
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float16, np.float32, np.float64]))
def test_grown_pow2_histogram_is_the_fixed_range_histogram(data, dtype):
    batches = data.draw(_batches(dtype))
    finite = np.concatenate([np.abs(b[np.isfinite(b)]).astype(np.float64) for b in batches])
    grown = Histogram(64, pow2=True)
    for b in batches:
        grown.update(b)
    amax = float(finite.max()) if finite.size else 0.0
    fixed = Histogram(64, range_max=pow2_ceil(amax) or None)
    for b in batches:
        fixed.update(b)
    grown.fixed = grown.range_max > 0
    assert grown == fixed
    if amax > 0:  # and both are the plain numpy histogram at that range
        expected = reference.histogram(finite, pow2_ceil(amax) / 64, 64)
        np.testing.assert_array_equal(grown.counts, expected)


def test_grow_to_refuses_a_range_that_is_not_a_power_of_two_multiple():
    h = Histogram(8, pow2=True)
    h.update(np.array([3.0], np.float32))
    assert h.range_max == 4.0
    h.grow_to(16.0)
    assert h.range_max == 16.0 and h.counts[1] == 1  # 3 / (16 / 8) -> bin 1
    with pytest.raises(Exception, match="power-of-two multiple"):
        h.grow_to(24.0)


@pytest.mark.parametrize("scope", ["all", "qdq"])
def test_one_read_state_equals_the_two_pass_route(scope):
    model = _model()
    options = CollectOptions(mode="two-pass", scope=scope)
    source = open_source({"x": _samples()})
    collector = _Collector(model, source, {}, 4, options, None)
    ranges, held = collector.range_pass()  # the old route: max first, then fixed ranges
    two = collector.histogram_pass(
        {n: pow2_ceil(v) for n, v in ranges.items()}, mode="two-pass", held=held
    )
    one = collect(model, {"x": _samples()}, batch_size=4, options=options)
    assert one.mode == two.mode == "two-pass" and one.exact
    assert one.histograms == two.histograms
    assert (one.num_batches, one.num_samples) == (two.num_batches, two.num_samples)


def test_two_pass_convergence_compares_the_first_four_fifths_with_all():
    # the old two-pass binned the last batch first, so its "before" already held the outliers
    rng = np.random.default_rng(3)
    arrays = rng.standard_normal((40, 2, 5, 5)).astype(np.float32)
    arrays[-4:] *= 50
    result = calibrate(_model(), {"x": arrays}, batch_size=4, convergence=True, mode="two-pass")
    report = result.convergence
    assert report["samples_before"] == 32 and report["samples_after"] == 40
    assert report["max_relative_move"] > 0.5
    # the partial state is the first 32 samples' exact histograms, grown to the final ranges
    first = collect(
        _model(), {"x": arrays[:32]}, batch_size=4, options=CollectOptions(mode="two-pass")
    )
    partial = result.state.partial
    assert partial is not None and partial.num_samples == 32
    for name, hist in first.histograms.items():
        hist.grow_to(result.state.histograms[name].range_max)
        assert partial.histograms[name] == hist
