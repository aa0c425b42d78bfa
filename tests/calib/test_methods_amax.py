"""max / percentile / MSE / unsigned methods against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx2trt_lib.calib import Histogram, entropy_threshold, mse_amax, percentile_amax, reference
from onnx2trt_lib.errors import CalibrationError


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 300), st.booleans())
def test_mse_matches_reference(seed, n, unsigned):
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 1000, n) * (rng.random(n) < 0.7)
    h[-1] += 1
    amax, curve = mse_amax(h, 0.25, unsigned=unsigned)
    ref = reference.mse_curve(h, 0.25, levels=255 if unsigned else 127)
    assert np.isnan(curve[0]) and curve.shape == (n + 1,)
    np.testing.assert_allclose(curve[1:], ref, rtol=1e-10)
    best = 1 + int(np.flatnonzero(ref <= ref.min() * (1 + 1e-12))[-1])
    assert amax == best * 0.25


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(50, 100))
def test_percentile_is_the_bin_where_the_cdf_crosses(seed, pct):
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal(5000))
    h = Histogram(512, range_max=float(x.max()))
    h.update(x)
    amax = percentile_amax(h.counts, h.bin_width, pct)
    k = round(amax / h.bin_width) - 1
    cdf = np.cumsum(h.counts) / x.size
    assert cdf[k] >= pct / 100 - 1e-12 and (k == 0 or cdf[k - 1] < pct / 100)
    # and it brackets numpy's percentile of the same values
    assert amax - h.bin_width <= np.percentile(x, pct, method="inverted_cdf") <= amax


def test_methods_agree_on_order_for_a_long_tail():
    rng = np.random.default_rng(8)
    x = np.maximum(rng.standard_normal(200_000), 0) ** 3  # ReLU with a long tail
    h = Histogram()
    h.update(x.astype(np.float32))
    r = {m: h.compute_amax(m) for m in ("entropy", "max", "percentile", "mse")}
    assert 0 < r["entropy"] < r["max"] and 0 < r["mse"] < r["max"] and r["percentile"] <= r["max"]
    signed = h.compute_amax("entropy")
    unsigned = h.compute_amax("entropy", unsigned=True)
    amax, m, _ = entropy_threshold(h.counts, h.bin_width, num_quant_bins=256, start_bin=256)
    assert unsigned == amax and m >= 256 and unsigned != signed
    assert 0 < h.compute_amax("mse", unsigned=True) <= h.amax_seen + h.bin_width


def test_percentile_bad_value():
    with pytest.raises(CalibrationError, match="percentile"):
        percentile_amax(np.ones(10), 1.0, 0.0)
