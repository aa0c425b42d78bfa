"""onnx2trt_lib: ONNX (usually from PyTorch) to fast TensorRT engines, with INT8 that works.

Importing the package is cheap: tensorrt, cuda-python, numba and onnxruntime load only
when a function that needs them is called.
"""

from __future__ import annotations

from .errors import (
    BuildError,
    CalibrationError,
    MissingDependencyError,
    Onnx2TrtError,
    PassError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "BuildError",
    "CalibrationError",
    "MissingDependencyError",
    "Onnx2TrtError",
    "PassError",
    "UsageError",
    "__version__",
    "fix",
    "lint",
]


def __getattr__(name: str):
    # fix/lint pull in onnx-graphsurgeon: load on first use, not at import.
    if name in ("fix", "lint"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'onnx2trt_lib' has no attribute {name!r}")
