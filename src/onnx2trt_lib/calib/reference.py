"""Slow, obviously-correct numpy twins of the numba kernels, for tests (and for reading).

Each function follows the spec literally, one step at a time; `_kernels.py` computes the
same numbers with algebra that is faster. Tests compare the two on generated inputs.
"""

from __future__ import annotations

import numpy as np

from ._kernels import KL_TIE_ATOL


def bin_index(abs_values: np.ndarray, bin_width: float, num_bins: int) -> np.ndarray:
    """Bin of each finite |x| <= range: floor(|x| * (1 / bin_width)) in float64, top edge in the last bin."""
    inv_w = 1.0 / bin_width if bin_width > 0 else 0.0
    k = np.floor(np.asarray(abs_values, dtype=np.float64) * inv_w).astype(np.int64)
    return np.minimum(k, num_bins - 1)


def histogram(values: np.ndarray, bin_width: float, num_bins: int) -> np.ndarray:
    """Counts of finite |values| (NaN/Inf dropped) with the kernels' bin rule; values must fit the range."""
    a = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    a = a[np.isfinite(a)]
    return np.bincount(bin_index(a, bin_width, num_bins), minlength=num_bins).astype(np.int64)


def kl_divergence_at(hist: np.ndarray, i: int, num_quant_bins: int = 128) -> float:
    """KL(P || Q) for candidate i, exactly as the spec's three steps say."""
    h = np.asarray(hist, dtype=np.float64)
    # 1. P = H[0:i] with everything beyond folded into its last bin
    p = h[:i].copy()
    p[i - 1] += h[i:].sum()
    # 2. Q = the *unclipped* H[0:i] merged into num_quant_bins groups, each group's total spread
    #    evenly over the group's bins whose H count is non-zero
    unclipped = h[:i]
    group = (np.arange(i) * num_quant_bins) // i
    totals = np.bincount(group, weights=unclipped, minlength=num_quant_bins)
    nonzero = np.bincount(
        group, weights=(unclipped > 0).astype(np.float64), minlength=num_quant_bins
    )
    q = np.zeros(i)
    mask = unclipped > 0
    q[mask] = totals[group[mask]] / nonzero[group[mask]]
    # 3. normalise, KL over P > 0; P > 0 where Q == 0 -> +inf
    if p.sum() <= 0 or q.sum() <= 0:
        return float("inf")
    p = p / p.sum()
    q = q / q.sum()
    pos = p > 0
    if np.any(q[pos] == 0):
        return float("inf")
    return float(np.sum(p[pos] * np.log(p[pos] / q[pos])))


def kl_curve(hist: np.ndarray, num_quant_bins: int = 128, start_bin: int = 128) -> np.ndarray:
    """curve[i] = KL of candidate i for i in [max(start_bin, num_quant_bins), N]; NaN below."""
    n = len(hist)
    start = max(start_bin, num_quant_bins)
    curve = np.full(n + 1, np.nan)
    for i in range(start, n + 1):
        curve[i] = kl_divergence_at(hist, i, num_quant_bins)
    return curve


def entropy_threshold(
    hist: np.ndarray, bin_width: float, *, num_quant_bins: int = 128, start_bin: int = 128
) -> tuple[float, int, np.ndarray]:
    """(amax, m, kl_curve): m = the candidate with the smallest KL, ties (within KL_TIE_ATOL) to the largest."""
    n = len(hist)
    start = max(start_bin, num_quant_bins)
    curve = kl_curve(hist, num_quant_bins, start_bin)
    if n < start or float(np.sum(hist)) <= 0:
        m = n
    else:
        best = np.nanmin(curve)
        m = int(np.flatnonzero(curve <= best + KL_TIE_ATOL)[-1])
    return (m + 0.5) * bin_width, m, curve


def mse_curve(hist: np.ndarray, bin_width: float, levels: int = 127, start: int = 1) -> np.ndarray:
    """Count-weighted squared quantisation error of the bin centres for amax = j * bin_width.

    One entry per j in [start, N] (not padded like methods.mse_amax's curve).
    """
    h = np.asarray(hist, dtype=np.float64)
    centres = (np.arange(len(h)) + 0.5) * bin_width
    out = []
    for j in range(start, len(h) + 1):
        amax = j * bin_width
        scale = amax / levels
        q = np.minimum(np.floor(centres / scale + 0.5), levels)
        out.append(float(np.sum(h * (centres - q * scale) ** 2)))
    return np.array(out)
