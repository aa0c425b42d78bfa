"""Reduced precision that TensorRT 11 accepts: INT8 as Q/DQ nodes, FP16 as an FP16 model.

`quantize` (insert-qdq + accuracy protection), `to_fp16` (to-fp16), and `compare` (per-output
errors and per-tensor SQNR of a quantized model against its FP32 original). Importing this
package loads no onnxruntime; the functions load it when they run.
"""

from __future__ import annotations

from .accuracy import AccuracyReport, OutputStats, TensorStats, compare
from .agreement import Criterion
from .api import Fp16Result, QuantizeResult, quantize, ranges_from, to_fp16
from .protect import ProtectionReport, protect

__all__ = [
    "AccuracyReport",
    "Criterion",
    "Fp16Result",
    "OutputStats",
    "ProtectionReport",
    "QuantizeResult",
    "TensorStats",
    "compare",
    "protect",
    "quantize",
    "ranges_from",
    "to_fp16",
]
