"""onnx2trt_lib: ONNX (usually from PyTorch) to fast TensorRT engines, with INT8 that works.

The flat API, one call per step (each takes a path or an `onnx.ModelProto`):

    lint, fix, calibrate, quantize, to_fp16, build, run, compare, inspect, sample_dir

Importing the package is cheap: onnx, numpy, tensorrt, cuda-python, numba and onnxruntime
load only when a function that needs them is called.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    BuildError,
    CalibrationError,
    MissingDependencyError,
    Onnx2TrtError,
    PassError,
    UsageError,
)

__version__ = "0.1.0"

# the flat API: defined in onnx2trt_lib.api, loaded on first use
_FLAT = (
    "build",
    "calibrate",
    "compare",
    "fix",
    "inspect",
    "lint",
    "quantize",
    "run",
    "sample_dir",
    "to_fp16",
)

__all__ = [
    "BuildError",
    "CalibrationError",
    "MissingDependencyError",
    "Onnx2TrtError",
    "PassError",
    "UsageError",
    "__version__",
    *_FLAT,
]


def __getattr__(name: str) -> Any:
    if name == "build":  # the subpackage is callable: one object for the call and the package
        import importlib

        return importlib.import_module(".build", __name__)
    if name in _FLAT:
        from . import api

        value = getattr(api, name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'onnx2trt_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FLAT))
