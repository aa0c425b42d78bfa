"""Thresholds from histograms: entropy (KL, TensorRT's method), max, percentile, MSE.

All functions take a histogram of |x| (`hist[k]` counts values in [k*w, (k+1)*w)) and return
an amax in the units of x. The numbers come from `_kernels.py`; `reference.py` is the spec.

Unsigned (ReLU-aware) option: `unsigned=True` uses 256 levels over [0, amax] instead of 128
per side (TensorRT's INT8 is symmetric, so this is a deviation, only right for tensors that
are never negative: it halves the step size for the same amax).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import CalibrationError
from . import _kernels as K

# amax returned when every value seen is zero: any scale represents zero exactly, and a scale
# of 1/127 keeps caches finite and harmless if the tensor turns out not to be zero at run time.
ZERO_AMAX = 1.0


def _check_hist(hist: Any, what: str = "histogram") -> np.ndarray:
    h = np.asarray(hist)
    if h.ndim != 1 or h.size == 0:
        raise CalibrationError(
            f"{what} must be a non-empty 1-D array of counts, got shape {h.shape}"
        )
    if not (np.issubdtype(h.dtype, np.integer) or np.issubdtype(h.dtype, np.floating)):
        raise CalibrationError(f"{what} must hold numbers, got dtype {h.dtype}")
    h = h.astype(np.float64)
    if not np.all(np.isfinite(h)) or np.any(h < 0):
        raise CalibrationError(
            f"{what} has negative or non-finite counts; pass counts from a histogram of |x|"
        )
    return h


def _check_width(bin_width: float) -> float:
    w = float(bin_width)
    if not (math.isfinite(w) and w > 0):
        raise CalibrationError(
            f"bin_width must be a positive finite number, got {bin_width!r} (an all-zero tensor has no width: "
            "use Histogram.compute_amax, which returns ZERO_AMAX for it)"
        )
    return w


def entropy_threshold(
    hist: np.ndarray, bin_width: float, *, num_quant_bins: int = 128, start_bin: int = 128
) -> tuple[float, int, np.ndarray]:
    """TensorRT-style KL threshold of a |x| histogram: (amax, m, kl_curve).

    Candidates i = max(start_bin, num_quant_bins) .. N; `kl_curve` has N + 1 entries and
    `kl_curve[i]` is candidate i's KL (NaN below the first candidate, +inf where some P > 0
    has Q = 0). m is the smallest-KL candidate (ties within 1e-12 go to the largest i) and
    amax = (m + 0.5) * bin_width. Defined cases: N < start (no candidate) or an empty
    histogram gives m = N and an all-NaN curve, i.e. the whole range plus half a bin.
    """
    h = _check_hist(hist)
    w = _check_width(bin_width)
    nq = int(num_quant_bins)
    if nq < 1:
        raise CalibrationError(f"num_quant_bins must be >= 1, got {num_quant_bins}")
    n = h.shape[0]
    start = max(int(start_bin), nq)
    curve = np.full(n + 1, np.nan)
    if n < start or h.sum() <= 0:
        return (n + 0.5) * w, n, curve
    m = int(K.kl_search_kernel(h, nq, start, curve[start:]))
    return (m + 0.5) * w, m, curve


def mse_amax(
    hist: np.ndarray, bin_width: float, *, unsigned: bool = False, start_bin: int = 1
) -> tuple[float, np.ndarray]:
    """(amax, mse_curve): amax = j * bin_width minimising the count-weighted squared error of the bin
    centres (ties: largest j); mse_curve[j] for j in [start_bin, N], NaN below."""
    h = _check_hist(hist)
    w = _check_width(bin_width)
    levels = 255 if unsigned else 127
    n = h.shape[0]
    start = min(max(int(start_bin), 1), n)
    curve = np.full(n + 1, np.nan)
    K.mse_curve_kernel(h, w, levels, start, curve[start:])
    best = np.nanmin(curve)
    j = int(np.flatnonzero(curve <= best * (1 + 1e-12))[-1])
    return j * w, curve


def percentile_amax(hist: np.ndarray, bin_width: float, percentile: float = 99.99) -> float:
    """Right edge of the bin where the cumulative count first reaches `percentile` % of the total."""
    h = _check_hist(hist)
    w = _check_width(bin_width)
    if not (0 < percentile <= 100):
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
    cdf = np.cumsum(h)
    if cdf[-1] <= 0:
        return h.shape[0] * w
    k = int(np.searchsorted(cdf, cdf[-1] * (percentile / 100.0), side="left"))
    return (min(k, h.shape[0] - 1) + 1) * w


# ncnn2table's constants: 128 target groups, eps = 0.0001f added to every bin of P and Q
NCNN_TARGET_BINS = 128
NCNN_KL_EPS = float(np.float32(0.0001))


def ncnn_kl_threshold(
    hist: np.ndarray, bin_width: float, *, target_bins: int = NCNN_TARGET_BINS
) -> tuple[float, int, np.ndarray]:
    """ncnn2table's KL threshold of a |x| histogram *without exact zeros*: (amax, t, kl_curve).

    ncnn bins only non-zero values, so callers take the zeros out of bin 0 first
    (`Histogram.compute_amax("ncnn-kl")` does). Candidates t = target_bins .. N-1;
    `kl_curve[t]` is candidate t's KL (NaN elsewhere); t is the first minimum and
    amax = (t + 0.5) * bin_width. An empty histogram (ncnn divides 0 by 0 and keeps the first
    candidate) gives t = target_bins; fewer bins than target_bins + 1 give the whole range.
    """
    h = _check_hist(hist)
    w = _check_width(bin_width)
    nq = int(target_bins)
    if nq < 1:
        raise CalibrationError(f"target_bins must be >= 1, got {target_bins}")
    n = h.shape[0]
    curve = np.full(n + 1, np.nan)
    if n <= nq:
        return (n + 0.5) * w, n, curve
    total = h.sum()
    if total <= 0:
        return (nq + 0.5) * w, nq, curve
    # ncnn: histogram_normed[j] = (float)(histogram[j] / (double)sum)
    normed = (h / total).astype(np.float32).astype(np.float64)
    t = int(K.ncnn_kl_kernel(normed, nq, NCNN_KL_EPS, curve[nq:n]))
    return (t + 0.5) * w, t, curve
