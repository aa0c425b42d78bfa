"""INT8 calibration: histograms of |x|, TensorRT-style entropy (KL) thresholds, caches.

Numeric core (numba): `Histogram`, `entropy_threshold`, `abs_max`, plus max / percentile /
MSE methods. `reference` holds the plain numpy spec the kernels are tested against.
"""

from __future__ import annotations

from .histogram import Histogram, abs_max
from .methods import ZERO_AMAX, entropy_threshold, mse_amax, percentile_amax

__all__ = ["ZERO_AMAX", "Histogram", "abs_max", "entropy_threshold", "mse_amax", "percentile_amax"]
