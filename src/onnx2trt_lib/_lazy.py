"""`lazy_module("onnx")`: a module name that imports on first attribute use.

onnx (and through it ml_dtypes) and numpy cost most of a second to import; modules on the
paths that need neither (`onnx2trt --help`, `inspect CACHE`, an engine-cache hit) hold them as
lazy names instead of importing them at the top. Annotations are strings (PEP 563), so
`onnx.ModelProto` in a signature imports nothing.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """A stand-in for `import name` whose attributes import the module when first read."""
    return _LazyModule(name)


__all__ = ["ModuleType", "lazy_module"]
