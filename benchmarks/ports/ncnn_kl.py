"""Reference port (not library code) of ncnn's `QuantNet::quantize_KL` threshold search.

Source read: Tencent/ncnn tools/quantize/ncnn2table.cpp
  (commit 23eaa63b71364d89552342e8896812fcd5332704): `compute_kl_divergence`, `quantize_KL`.
Only the per-blob histogram and search are ported (not the network/image plumbing).
Behaviour kept on purpose:
  * 2048-bin histogram of |x| over [0, absmax] that SKIPS exact zeros; bin =
    min(int(|x| / absmax * 2048), 2047) in float32,
  * float32 arithmetic throughout, kl_eps = 1e-4 added to both distributions (which are not
    renormalised afterwards), KL summed over every bin,
  * candidates threshold = 128 .. 2047 (2048 itself is never tried),
  * q merges the *normalised unclipped* histogram into 128 groups with fractional bin edges
    (a bin split between two groups contributes proportionally) and spreads each group over
    all its bins, zero or not,
  * strict `<` keeps the first minimum; threshold = (t + 0.5) * absmax / 2048.
The C++ loops are expressed with numpy slices; float32 sums may round in a different order.
"""

from __future__ import annotations

import math

import numpy as np

NUM_HISTOGRAM_BINS = 2048
TARGET_BIN = 128
KL_EPS = np.float32(0.0001)


def ncnn_histogram(arr, absmax=None):
    """(histogram uint64[2048], absmax) as ncnn's two passes build it (zeros skipped)."""
    a = np.abs(np.asarray(arr, dtype=np.float32).ravel())
    if absmax is None:
        absmax = np.float32(a.max())
    a = a[a != 0]
    index = np.minimum((a / np.float32(absmax) * np.float32(NUM_HISTOGRAM_BINS)).astype(np.int32),
                       NUM_HISTOGRAM_BINS - 1)
    return np.bincount(index, minlength=NUM_HISTOGRAM_BINS).astype(np.uint64), float(absmax)


def _kl(a, b):
    return np.float32(np.sum(a * np.log(a / b), dtype=np.float32))


def quantize_kl_threshold(histogram, absmax):
    """(threshold, target_threshold) for one blob."""
    hist = np.asarray(histogram, dtype=np.uint64)
    total = float(hist.sum())
    normed = (hist / total).astype(np.float32)
    target_threshold = TARGET_BIN
    min_kl = np.float32(np.finfo(np.float32).max)
    for threshold in range(TARGET_BIN, NUM_HISTOGRAM_BINS):
        clip = np.full(threshold, KL_EPS, dtype=np.float32)
        clip += normed[:threshold]
        clip[threshold - 1] += np.sum(normed[threshold:], dtype=np.float32)
        num_per_bin = np.float32(threshold) / np.float32(TARGET_BIN)
        quant = np.zeros(TARGET_BIN, dtype=np.float32)
        # first group
        end = num_per_bin
        right_lower = int(math.floor(end))
        right_scale = np.float32(end - right_lower)
        if right_scale > 0:
            quant[0] += right_scale * normed[right_lower]
        quant[0] += np.sum(normed[:right_lower], dtype=np.float32)
        quant[0] /= np.float32(right_lower + right_scale)
        # middle groups
        for j in range(1, TARGET_BIN - 1):
            start = np.float32(j * num_per_bin)
            end = np.float32((j + 1) * num_per_bin)
            left_upper = int(math.ceil(start))
            left_scale = np.float32(left_upper - start)
            right_lower = int(math.floor(end))
            right_scale = np.float32(end - right_lower)
            if left_scale > 0:
                quant[j] += left_scale * normed[left_upper - 1]
            if right_scale > 0:
                quant[j] += right_scale * normed[right_lower]
            quant[j] += np.sum(normed[left_upper:right_lower], dtype=np.float32)
            quant[j] /= np.float32(right_lower - left_upper + left_scale + right_scale)
        # last group
        start = np.float32(threshold - num_per_bin)
        left_upper = int(math.ceil(start))
        left_scale = np.float32(left_upper - start)
        if left_scale > 0:
            quant[TARGET_BIN - 1] += left_scale * normed[left_upper - 1]
        quant[TARGET_BIN - 1] += np.sum(normed[left_upper:threshold], dtype=np.float32)
        quant[TARGET_BIN - 1] /= np.float32(threshold - left_upper + left_scale)
        # expand back to `threshold` bins
        expand = np.full(threshold, KL_EPS, dtype=np.float32)
        end = num_per_bin
        right_lower = int(math.floor(end))
        right_scale = np.float32(end - right_lower)
        if right_scale > 0:
            expand[right_lower] += right_scale * quant[0]
        expand[:right_lower] += quant[0]
        for j in range(1, TARGET_BIN - 1):
            start = np.float32(j * num_per_bin)
            end = np.float32((j + 1) * num_per_bin)
            left_upper = int(math.ceil(start))
            left_scale = np.float32(left_upper - start)
            right_lower = int(math.floor(end))
            right_scale = np.float32(end - right_lower)
            if left_scale > 0:
                expand[left_upper - 1] += left_scale * quant[j]
            if right_scale > 0:
                expand[right_lower] += right_scale * quant[j]
            expand[left_upper:right_lower] += quant[j]
        start = np.float32(threshold - num_per_bin)
        left_upper = int(math.ceil(start))
        left_scale = np.float32(left_upper - start)
        if left_scale > 0:
            expand[left_upper - 1] += left_scale * quant[TARGET_BIN - 1]
        expand[left_upper:threshold] += quant[TARGET_BIN - 1]
        kl = _kl(clip, expand)
        if kl < min_kl:
            min_kl = kl
            target_threshold = threshold
    return (target_threshold + 0.5) * absmax / NUM_HISTOGRAM_BINS, target_threshold
