"""Running models and engines: cuda-python buffers and streams, TrtRunner, OrtRunner, compare().

Nothing heavy is imported here: cuda-python, TensorRT and ONNX Runtime load when a runner
is created.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

__all__ = [
    "CompareReport",
    "OrtRunner",
    "Runner",
    "TensorSpec",
    "TrtRunner",
    "compare",
    "open_runner",
]

# numpy-only modules load eagerly; `compare` the function must shadow `compare` the submodule.
from .base import Runner, TensorSpec
from .compare import CompareReport, compare

_LAZY = {
    "OrtRunner": "ort_runner",
    "TrtRunner": "trt_runner",
}

ONNX_SUFFIXES = (".onnx",)


def open_runner(path: str | os.PathLike, **options: Any) -> Any:
    """OrtRunner for an .onnx file, TrtRunner for anything else (an engine); options go to the runner."""
    from ..errors import ModelLoadError

    source = Path(path)
    if not source.is_file():
        raise ModelLoadError(f"{source}: no such file (expected an .onnx model or an engine)")
    if source.suffix.lower() in ONNX_SUFFIXES:
        from .ort_runner import OrtRunner

        return OrtRunner(source, **options)
    from .trt_runner import TrtRunner

    return TrtRunner(source, **options)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnx2trt_lib.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
