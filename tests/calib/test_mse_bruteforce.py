"""The histogram MSE curve is the quantization error of the values themselves (brute force).

Values placed at the bin centres (with either sign, since |x| is binned) are quantized the way
ONNX Runtime's QuantizeLinear/DequantizeLinear does (round half to even, clip to +-levels) for
every candidate amax j * w; the squared error summed over the values must be the curve's entry,
and the amax that `mse_amax` returns must have the least brute-force error.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx2trt_lib.calib import Histogram, mse_amax


def brute_force_errors(values: np.ndarray, width: float, n: int, levels: int) -> np.ndarray:
    """Sum of (x - fq(x))^2 for amax = j * width, j = 1..n; fq as in ONNX Runtime's Q/DQ."""
    errors = np.empty(n)
    for j in range(1, n + 1):
        scale = j * width / levels
        q = np.clip(np.rint(values / scale), -levels, levels) * scale
        errors[j - 1] = np.sum((values - q) ** 2)
    return errors


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=160),
    width=st.floats(1e-3, 10.0),
    unsigned=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_histogram_mse_is_the_brute_force_error_of_the_values(counts, width, unsigned, seed):
    hist = np.asarray(counts, dtype=np.int64)
    if hist.sum() == 0:
        hist[-1] = 1
    rng = np.random.default_rng(seed)
    centres = (np.arange(len(hist)) + 0.5) * width
    values = np.repeat(centres, hist)
    if not unsigned:
        values = values * rng.choice([-1.0, 1.0], size=len(values))
    levels = 255 if unsigned else 127
    amax, curve = mse_amax(hist, width, unsigned=unsigned)
    brute = brute_force_errors(values, width, len(hist), levels)
    scale = max(float(np.sum(values**2)), 1e-300)
    np.testing.assert_allclose(curve[1:], brute, rtol=1e-9, atol=1e-12 * scale)
    j = round(amax / width)
    assert brute[j - 1] <= brute.min() * (1 + 1e-9) + 1e-12 * scale


def test_histogram_state_mse_matches_brute_force_on_real_activations():
    """Through Histogram (2048 bins over the data's range): the chosen amax's error on the bin
    centres is the least, and on the raw values it is within a bin width of the best."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000), rng.standard_normal(20) * 30]).astype(
        np.float32
    )
    h = Histogram()
    h.update(x)
    amax = h.compute_amax("mse")
    scale = amax / 127
    err = np.sum((x - np.clip(np.rint(x / scale), -127, 127) * scale) ** 2)
    grid = np.linspace(amax * 0.5, float(np.abs(x).max()), 200)
    best = min(
        np.sum((x - np.clip(np.rint(x / (g / 127)), -127, 127) * (g / 127)) ** 2) for g in grid
    )
    assert err <= best * 1.02
