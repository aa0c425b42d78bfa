"""The one place that imports optional heavy dependencies.

Nothing here is imported at package import time; each helper imports on call and raises
`MissingDependencyError` naming the pip extra that provides the module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module name -> (pip requirement users should install, extra of this package; None for a
# base dependency, which `pip install onnx2trt_lib` already brings)
_EXTRAS: dict[str, tuple[str, str | None]] = {
    "tensorrt": ("tensorrt", "tensorrt"),
    "tensorrt_rtx": ("tensorrt-rtx", "rtx"),
    "cuda.bindings.runtime": ("cuda-python", "cuda"),
    "cuda.cudart": ("cuda-python", "cuda"),
    "onnxruntime": ("onnxruntime", None),
    "polygraphy": ("polygraphy", "polygraphy"),
    "matplotlib": ("matplotlib", "plots"),
    "matplotlib.pyplot": ("matplotlib", "plots"),
    "PIL": ("Pillow", None),
    "PIL.Image": ("Pillow", None),
    "numba": ("numba", None),
    "ray": ("ray", "ray"),
}


def _missing(module: str, purpose: str | None = None) -> MissingDependencyError:
    requirement, extra = _EXTRAS.get(module, (module.split(".")[0], module.split(".")[0]))
    what = f" for {purpose}" if purpose else ""
    how = f"(or onnx2trt_lib[{extra}])" if extra else "(a base dependency of onnx2trt_lib)"
    return MissingDependencyError(
        f"{module} is needed{what} but is not installed: pip install '{requirement}' {how}"
    )


def from_import_error(exc: ImportError) -> MissingDependencyError | None:
    """A MissingDependencyError for `exc` when it is a known dependency that is not installed, else None."""
    name = getattr(exc, "name", None) or ""
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    for module in (name, name.split(".")[0]):
        if module in _EXTRAS:
            return _missing(module)
    return None


def require(module: str, *, purpose: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependencyError saying what to pip install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module, purpose) from exc


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
    ort = require("onnxruntime", purpose="running ONNX models on CPU")
    quiet_onnxruntime(ort)
    return ort


def quiet_onnxruntime(ort: ModuleType | None = None) -> None:
    """Errors only from ONNX Runtime's default logger (sessions graph-surgeon makes too): its
    warning/error lines on stderr would otherwise surround our one-line error."""
    if ort is None:
        import sys

        ort = sys.modules.get("onnxruntime")
    if ort is not None and hasattr(ort, "set_default_logger_severity"):
        ort.set_default_logger_severity(4)  # fatal only: errors reach us as exceptions


def ray() -> ModuleType:
    return require("ray", purpose="calibration on several workers (--workers)")


def pyplot() -> ModuleType:
    mpl = require("matplotlib", purpose="plots")
    mpl.use("Agg")
    return require("matplotlib.pyplot", purpose="plots")
