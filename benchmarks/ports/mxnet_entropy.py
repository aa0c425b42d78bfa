"""Reference port (not library code) of MXNet's `_get_optimal_threshold` (pure-Python version).

Source read: apache/mxnet python/mxnet/contrib/quantization.py
  (commit 6ade2b05489d65307ed81b23c7513f20168d8ef2): `_smooth_distribution`,
  `_get_optimal_threshold(arr, num_bins=8001, num_quantized_bins=255)`.
(Later MXNet moved the loop into a C++ operator `calibrate_entropy`; the Python one is the
algorithm.) The original builds the histogram itself from the raw array; this port splits that
into `mxnet_histogram` so the search can be timed alone. Behaviour kept on purpose:
  * signed histogram with an odd number of bins over [-th, th]; candidates grow both sides,
  * outliers folded into the first and last kept bins of p,
  * q from the unclipped slice in `num_quantized_bins` groups of size//num_quantized_bins, the
    remainder added to the last group; spread over the slice's non-zero bins, BUT the last
    group's expansion slice is [start:-1], so it never reaches the last bin (a quirk),
  * both distributions smoothed with eps = 1e-4 (float32), scipy entropy, first argmin,
  * threshold = hist_edges[zero_bin + i + 1] (the right edge of the last kept bin).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def mxnet_histogram(arr, num_bins=8001):
    """(hist, hist_edges, min_val, max_val, th) as MXNet's collector makes it."""
    arr = np.asarray(arr)
    min_val = np.min(arr)
    max_val = np.max(arr)
    th = max(abs(min_val), abs(max_val))
    hist, hist_edges = np.histogram(arr, bins=num_bins, range=(-th, th))
    return hist, hist_edges, min_val, max_val, th


def _smooth_distribution(p, eps=0.0001):
    is_zeros = (p == 0).astype(np.float32)
    is_nonzeros = (p != 0).astype(np.float32)
    n_zeros = is_zeros.sum()
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        raise ValueError("The discrete probability distribution is malformed. All entries are 0.")
    eps1 = eps * float(n_zeros) / float(n_nonzeros)
    assert eps1 < 1.0, f"n_zeros={n_zeros}, n_nonzeros={n_nonzeros}, eps1={eps1}"
    hist = p.astype(np.float32)
    hist += eps * is_zeros + (-eps1) * is_nonzeros
    assert (hist <= 0).sum() == 0
    return hist


def get_optimal_threshold(hist_data, num_quantized_bins=255):
    """(min_val, max_val, min_divergence, opt_th) for a histogram from `mxnet_histogram`."""
    hist, hist_edges, min_val, max_val, _ = hist_data
    num_bins = len(hist)
    assert num_bins % 2 == 1
    zero_bin_idx = num_bins // 2
    num_half_quantized_bins = num_quantized_bins // 2
    thresholds = np.zeros(num_bins // 2 + 1 - num_quantized_bins // 2)
    divergence = np.zeros_like(thresholds)
    quantized_bins = np.zeros(num_quantized_bins, dtype=np.int32)
    for i in range(num_quantized_bins // 2, num_bins // 2 + 1):
        p_bin_idx_start = zero_bin_idx - i
        p_bin_idx_stop = zero_bin_idx + i + 1
        thresholds[i - num_half_quantized_bins] = hist_edges[p_bin_idx_stop]
        sliced_nd_hist = hist[p_bin_idx_start:p_bin_idx_stop]
        p = sliced_nd_hist.copy()
        p[0] += np.sum(hist[0:p_bin_idx_start])
        p[-1] += np.sum(hist[p_bin_idx_stop:])
        is_nonzeros = (sliced_nd_hist != 0).astype(np.int32)
        num_merged_bins = p.size // num_quantized_bins
        for j in range(num_quantized_bins):
            start = j * num_merged_bins
            stop = start + num_merged_bins
            quantized_bins[j] = sliced_nd_hist[start:stop].sum()
        quantized_bins[-1] += sliced_nd_hist[num_quantized_bins * num_merged_bins :].sum()
        q = np.zeros(p.size, dtype=np.float32)
        for j in range(num_quantized_bins):
            start = j * num_merged_bins
            stop = -1 if j == num_quantized_bins - 1 else start + num_merged_bins
            norm = is_nonzeros[start:stop].sum()
            if norm != 0:
                q[start:stop] = float(quantized_bins[j]) / float(norm)
        q[sliced_nd_hist == 0] = 0
        p = _smooth_distribution(p)
        q = _smooth_distribution(q)
        divergence[i - num_half_quantized_bins] = stats.entropy(p, q)
        quantized_bins[:] = 0
    min_divergence_idx = np.argmin(divergence)
    return min_val, max_val, divergence[min_divergence_idx], thresholds[min_divergence_idx]
