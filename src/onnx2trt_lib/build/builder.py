"""`Builder`: the common case in one call, ONNX in, engine file + sidecar out, cached.

    result = Builder(BuildConfig(fp16=True, profiles=profiles_from_specs(["x:1x3x224x224/8x3x224x224/32x3x224x224"]))).build(
        "model.onnx", "model.engine")

Everything here is composed from network_from_onnx, engine_bytes_from_network,
make_sidecar, save_engine and EngineCache; use those directly for anything unusual.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import (
    check_output_path,
    external_data_files,
    load_model,
    sha256_file,
    sha256_model,
    sha256_model_file,
)
from .._lazy import lazy_module
from ..errors import UsageError
from .backends import Backend, detect_backend, peek_backend
from .cache import EngineCache, cache_key
from .config import BuildConfig
from .engine import (
    ProgressCallback,
    engine_bytes_from_network,
    make_sidecar,
    read_sidecar,
    save_engine,
    sidecar_path,
)
from .network import network_from_onnx

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")  # imported on first use (see _lazy)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    """What a build produced; `cache_hit` says the engine came from the cache, unbuilt."""

    engine: bytes = field(repr=False)
    sidecar: dict[str, Any] = field(repr=False)
    path: Path | None
    cache_hit: bool
    seconds: float
    backend: Backend

    @property
    def sidecar_path(self) -> Path | None:
        return sidecar_path(self.path) if self.path is not None else None

    def summary(self) -> dict[str, Any]:
        return {
            "engine": str(self.path) if self.path else None,
            "sidecar": str(self.sidecar_path) if self.path else None,
            "cache_hit": self.cache_hit,
            "seconds": round(self.seconds, 4),
            "backend": self.backend.to_dict(),
            "target": self.sidecar.get("target"),
            "engine_size": len(self.engine),
            "inputs": self.sidecar.get("inputs"),
            "outputs": self.sidecar.get("outputs"),
        }


class Builder:
    """Builds engines with one BuildConfig, reusing cached engines when nothing changed.

    `cache_dir=None` uses the default cache folder (see `default_cache_dir`);
    `cache_dir=False` turns the cache off.
    """

    def __init__(
        self,
        config: BuildConfig | None = None,
        *,
        cache_dir: str | os.PathLike | None | bool = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config if config is not None else BuildConfig()
        if cache_dir is True:
            cache_dir = None
        self.cache = None if cache_dir is False else EngineCache(cache_dir)
        self.progress = progress

    def build(
        self, model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike | None = None
    ) -> BuildResult:
        """Build (or fetch from the cache) the engine for `model`; save it to `output` if given."""
        start = time.perf_counter()
        config = self.config
        # a cache hit needs only the backend's name and version: read them without importing it
        peeked = peek_backend(config.backend) if self.cache is not None else None
        backend = peeked or detect_backend(config.backend)
        _check_inputs_exist(config)
        out_path = None
        read = (model, config.calibration_cache, config.calibration_data)
        sources = tuple(p for p in read if isinstance(p, (str, os.PathLike)))
        if isinstance(model, (str, os.PathLike)):
            sources += tuple(external_data_files(model))  # the weights are inputs too
        if output is not None:
            out_path = check_output_path(output, inputs=sources)
            check_output_path(sidecar_path(out_path), inputs=sources)
        if config.timing_cache is not None and backend.has_timing_cache:
            check_output_path(
                config.timing_cache, inputs=sources
            )  # it is written after the slow build
        if config.timing_cache is not None and out_path is not None:
            _check_distinct(config.timing_cache, (out_path, sidecar_path(out_path)))

        onnx_sha256, source = _fingerprint(model)
        key = cache_key(onnx_sha256, config, backend) if self.cache is not None else None
        cached = self.cache.get(key) if self.cache is not None and key is not None else None
        if cached is None and peeked is not None:
            backend = detect_backend(config.backend)  # a miss: detect properly before building
            if backend != peeked and self.cache is not None:
                key = cache_key(onnx_sha256, config, backend)
                cached = self.cache.get(key)
        if cached is not None:
            engine, sidecar = cached
            sidecar = {**sidecar, "onnx_source": source}
            if out_path is not None and not _up_to_date(out_path, sidecar):
                save_engine(out_path, engine, sidecar)
            log.info("engine for %s from cache (%s)", source, key[:12] if key else "")
            return BuildResult(
                engine, sidecar, out_path, True, time.perf_counter() - start, backend
            )

        parsed = network_from_onnx(model, backend, config=config)
        engine = engine_bytes_from_network(parsed, config, progress=self.progress)
        sidecar = make_sidecar(parsed, config, engine, onnx_sha256=onnx_sha256, onnx_source=source)
        if out_path is not None:
            save_engine(out_path, engine, sidecar)
        if self.cache is not None and key is not None:
            self.cache.put(key, engine, sidecar)
        return BuildResult(engine, sidecar, out_path, False, time.perf_counter() - start, backend)


def build_engine(
    model: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike | None = None,
    config: BuildConfig | None = None,
    *,
    cache_dir: str | os.PathLike | None | bool = None,
) -> BuildResult:
    """Function form of `Builder(config, cache_dir=...).build(model, output)`."""
    return Builder(config, cache_dir=cache_dir).build(model, output)


def _fingerprint(model: str | os.PathLike | onnx.ModelProto) -> tuple[str, str | None]:
    """sha256 of the ONNX file and its external data (a path), or of its serialization (a proto).

    A path is hashed without loading the weights, so a cache hit never pays for loading the model.
    """
    if not isinstance(model, (str, os.PathLike)):  # a ModelProto (onnx is not imported for a path)
        return sha256_model(model), None
    path = Path(model)
    if not path.is_file():
        load_model(path)  # raises the library's one-line "no such file / is a directory"
    return sha256_model_file(path), str(path)


def _up_to_date(out_path: Path, sidecar: dict[str, Any]) -> bool:
    """True when `out_path` already holds this engine and a sidecar for it: nothing to write."""
    try:
        existing = read_sidecar(out_path)
        if existing.get("engine_sha256") != sidecar.get("engine_sha256"):
            return False
        return sha256_file(out_path) == sidecar.get("engine_sha256")
    except Exception:  # noqa: BLE001 - missing, unreadable or foreign: write it
        return False


def _check_distinct(timing_cache: str | os.PathLike, outputs: tuple[Path, ...]) -> None:
    """The timing cache is written too: it must not be the engine or its sidecar (one would replace the other)."""
    for out in outputs:
        with contextlib.suppress(OSError):
            if Path(timing_cache).resolve() == out.resolve():
                raise UsageError(
                    f"--timing-cache {timing_cache} is the same file as output {out}; give another path"
                )


def _check_inputs_exist(config: BuildConfig) -> None:
    for label, value in (
        ("calibration cache", config.calibration_cache),
        ("calibration data", config.calibration_data),
    ):
        if value is None or Path(value).exists():
            continue
        if (
            label == "calibration data"
            and glob.has_magic(value)
            and glob.glob(value, recursive=True)
        ):
            continue  # a quoted glob of images, as calibrate takes it
        raise UsageError(f"{label} {value} does not exist")
