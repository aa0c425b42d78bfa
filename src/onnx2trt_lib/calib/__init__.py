"""INT8 calibration: histograms of |x|, TensorRT-style entropy (KL) thresholds, caches.

Numeric core (numba): `Histogram`, `entropy_threshold`, `abs_max`, plus max / percentile /
MSE methods. `reference` holds the plain numpy spec the kernels are tested against. The
numeric names load on first use: reading a cache (`calib.cache`) needs neither numba nor numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ZERO_AMAX", "Histogram", "abs_max", "entropy_threshold", "mse_amax", "percentile_amax"]

_LAZY = {
    "Histogram": "histogram",
    "abs_max": "histogram",
    "ZERO_AMAX": "methods",
    "entropy_threshold": "methods",
    "mse_amax": "methods",
    "percentile_amax": "methods",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
