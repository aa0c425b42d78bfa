"""The one place that imports optional heavy dependencies.

Nothing here is imported at package import time; each helper imports on call and raises
`MissingDependencyError` naming the pip extra that provides the module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module name -> (pip requirement users should install, extra of this package)
_EXTRAS: dict[str, tuple[str, str]] = {
    "tensorrt": ("tensorrt", "tensorrt"),
    "tensorrt_rtx": ("tensorrt-rtx", "rtx"),
    "cuda.bindings.runtime": ("cuda-python", "cuda"),
    "cuda.cudart": ("cuda-python", "cuda"),
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "polygraphy": ("polygraphy", "polygraphy"),
    "matplotlib": ("matplotlib", "plots"),
    "matplotlib.pyplot": ("matplotlib", "plots"),
    "PIL": ("Pillow", "images"),
    "PIL.Image": ("Pillow", "images"),
    "numba": ("numba", "numba"),
}


def require(module: str, *, purpose: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependencyError saying what to pip install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        requirement, extra = _EXTRAS.get(module, (module.split(".")[0], module.split(".")[0]))
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"{module} is needed{what} but is not installed: "
            f"pip install '{requirement}' (or onnx2trt_lib[{extra}])"
        ) from exc


def available(module: str) -> bool:
    """True when `module` imports; never raises."""
    try:
        importlib.import_module(module)
    except Exception:  # a broken install (e.g. missing shared libs) counts as absent
        return False
    return True


def tensorrt() -> ModuleType:
    return require("tensorrt", purpose="building engines with TensorRT")


def tensorrt_rtx() -> ModuleType:
    return require("tensorrt_rtx", purpose="building engines with TensorRT-RTX")


def cudart() -> ModuleType:
    """cuda-python's runtime bindings: `cuda.bindings.runtime` (>=12.6), else legacy `cuda.cudart`."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return require("cuda.cudart", purpose="GPU buffers and streams")


def onnxruntime() -> ModuleType:
    return require("onnxruntime", purpose="running ONNX models on CPU")


def pyplot() -> ModuleType:
    mpl = require("matplotlib", purpose="plots")
    mpl.use("Agg")
    return require("matplotlib.pyplot", purpose="plots")
