"""Reduced precision that TensorRT 11 accepts: INT8 as Q/DQ nodes, FP16 as an FP16 model.

The calls live in the flat API: `onnx2trt_lib.quantize` (insert-qdq + accuracy protection),
`onnx2trt_lib.to_fp16` (to-fp16) and `onnx2trt_lib.compare(..., per_tensor=True)` (per-output
errors and per-tensor SQNR of a quantized model against its FP32 original). This package keeps
the result types and `protect`. Importing it loads no onnxruntime.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .accuracy import AccuracyReport, OutputStats, TensorStats
from .api import Fp16Result, QuantizeResult, ranges_from
from .prepare import PrepareResult, prepare_int8
from .protect import Criterion, ProtectionReport, protect

__all__ = [
    "AccuracyReport",
    "Criterion",
    "Fp16Result",
    "OutputStats",
    "PrepareResult",
    "ProtectionReport",
    "QuantizeResult",
    "TensorStats",
    "prepare_int8",
    "protect",
    "ranges_from",
]

# old spellings, kept for one release: name -> (module, what to use instead)
_DEPRECATED = {
    "quantize": ("api", "onnx2trt_lib.quantize"),
    "to_fp16": (
        "api",
        "onnx2trt_lib.to_fp16 (it keeps float32 inputs/outputs unless keep_io_types=False)",
    ),
    "compare": (
        "accuracy",
        "onnx2trt_lib.compare(candidate, reference, data, per_tensor=True): note the "
        "candidate-first order",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        module, instead = _DEPRECATED[name]
        warnings.warn(
            f"onnx2trt_lib.quant.{name} is deprecated and goes in the next release; use {instead}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
