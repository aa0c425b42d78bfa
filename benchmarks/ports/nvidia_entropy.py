"""Reference port (not library code) of NVIDIA's `_compute_amax_entropy`, numpy only.

Sources read (same algorithm in both):
  NVIDIA/TensorRT tools/pytorch-quantization/pytorch_quantization/calib/histogram.py
    (commit 1637a26ebea458f810ec219cdcdaaac17603d9f9), `_compute_amax_entropy`
  NVIDIA/Model-Optimizer modelopt/torch/quantization/calib/histogram.py
    (commit 74c4858eb44def110d483a27611808a85d4e1866), `_compute_amax_entropy`
The only difference: pytorch-quantization takes `bins = calib_hist[:]`, a numpy view, so its
`bins[0] = bins[1]` overwrites the caller's histogram; ModelOpt copies first. This port copies.
Torch is dropped (the original wraps the result in torch.tensor). Behaviour kept on purpose:
  * bin 0 is replaced by bin 1 before anything else (ignores the spike of exact zeros),
  * groups from np.digitize over np.linspace(0, i, nbins + 1) (float edges),
  * `_normalize_distr` in the original rebinds a local and does nothing; scipy's entropy
    normalises both inputs anyway,
  * amax = calib_bin_edges[i] (the left edge of bin i, no + 0.5), ties -> the last i.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy.stats import entropy


def compute_amax_entropy(calib_hist, calib_bin_edges, num_bits=8, unsigned=False, stride=1, start_bin=128):
    """amax minimising KL(reference || quantised) over candidates start_bin..len(hist)."""
    if calib_bin_edges is None and calib_hist is None:
        return None
    bins = np.array(calib_hist, copy=True)
    bins[0] = bins[1]
    total_data = np.sum(bins)
    divergences = []
    nbins = 1 << (num_bits - 1 + int(unsigned))  # 128 levels + sign for 8 bits
    new_density_counts = np.zeros(nbins, dtype=np.float64)
    for i in range(start_bin, len(bins) + 1, stride):
        new_density_counts.fill(0)
        space = np.linspace(0, i, num=nbins + 1)
        digitized_space = np.digitize(range(i), space) - 1
        digitized_space[bins[:i] == 0] = -1
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density_counts[digitized] += bins[idx]
        counter = Counter(digitized_space)
        for key, val in counter.items():
            if key != -1:
                new_density_counts[key] = new_density_counts[key] / val
        new_density = np.zeros(i, dtype=np.float64)
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density[idx] = new_density_counts[digitized]
        total_counts_new = np.sum(new_density) + np.sum(bins[i:])
        reference_density = np.array(bins[: len(digitized_space)])
        reference_density[-1] += np.sum(bins[i:])
        total_counts_old = np.sum(reference_density)
        if round(total_counts_new) != total_data or round(total_counts_old) != total_data:
            raise RuntimeError(
                f"Count mismatch! total_counts_new={total_counts_new}, total_counts_old={total_counts_old}, "
                f"total_data={total_data}"
            )
        divergences.append(entropy(reference_density, new_density))
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return float(calib_bin_edges[last_argmin * stride + start_bin])
