"""ONNX -> TensorRT engine on TensorRT 10, TensorRT 11 or TensorRT-RTX, with an engine cache.

Small functions named for what they turn into what (`network_from_onnx`,
`engine_bytes_from_network`, `engine_from_bytes`, `save_engine`/`load_engine`), a frozen
`BuildConfig`, and `Builder` for the common case. Importing this package does not import
TensorRT; each call detects the installed backend. The package is also callable:
`onnx2trt_lib.build(model, output, shapes=...)` is the flat API's `build`.
"""

from __future__ import annotations

import sys
import types
from inspect import signature as _signature
from typing import Any

from ..api import build as _flat_build
from .backends import Backend, available_backends, detect_backend, prepare_onnx_for_precision
from .builder import Builder, BuildResult, build_engine
from .cache import EngineCache, cache_key, default_cache_dir
from .config import (
    BuildConfig,
    InputRange,
    Profile,
    parse_memory_size,
    parse_profile,
    parse_shapes,
    profile_from_min_opt_max,
    profiles_from_specs,
)
from .engine import (
    EngineFileError,
    LoadedEngine,
    check_sidecar,
    engine_bytes_from_network,
    engine_from_bytes,
    engine_path_for,
    inspect_engine,
    inspection_lines,
    is_engine_artifact,
    load_engine,
    make_sidecar,
    read_sidecar,
    save_engine,
    sidecar_path,
)
from .network import ParsedNetwork, TensorInfo, network_from_onnx

__all__ = [
    "Backend",
    "BuildConfig",
    "BuildResult",
    "Builder",
    "EngineCache",
    "EngineFileError",
    "InputRange",
    "LoadedEngine",
    "ParsedNetwork",
    "Profile",
    "TensorInfo",
    "available_backends",
    "build_engine",
    "cache_key",
    "check_sidecar",
    "default_cache_dir",
    "detect_backend",
    "engine_bytes_from_network",
    "engine_from_bytes",
    "engine_path_for",
    "inspect_engine",
    "inspection_lines",
    "is_engine_artifact",
    "load_engine",
    "make_sidecar",
    "network_from_onnx",
    "parse_memory_size",
    "parse_profile",
    "parse_shapes",
    "prepare_onnx_for_precision",
    "profile_from_min_opt_max",
    "profiles_from_specs",
    "read_sidecar",
    "save_engine",
    "sidecar_path",
]


class _CallablePackage(types.ModuleType):
    """`onnx2trt_lib.build(model, ...)` is the flat API's `build`; as a package it still holds
    the building blocks above. One object for both, whichever is imported first."""

    def __call__(self, *args: Any, **kwargs: Any) -> BuildResult:
        from ..api import build

        return build(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
__signature__ = _signature(_flat_build)
