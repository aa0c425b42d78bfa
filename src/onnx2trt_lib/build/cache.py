"""Engine cache: the same ONNX + BuildConfig + backend version returns the stored engine.

Building is slow (minutes on large models) and deterministic enough to reuse, so the key
covers everything that changes the engine: the ONNX bytes' sha256, every BuildConfig field
that affects the result (calibration inputs by *content*, not path), the backend name and
version, the target GPU, and this library's version. The timing cache path is left out: it
changes build time, not the engine's meaning.

Layout: `<root>/<key>.engine` and `<root>/<key>.engine.json` (the usual sidecar).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .. import __version__
from .._io import sha256_file
from ..errors import UsageError
from .backends import Backend, engine_target
from .config import BuildConfig
from .engine import EngineFileError, read_sidecar, save_engine

log = logging.getLogger(__name__)

_NOT_IN_KEY = ("timing_cache", "backend")  # backend is keyed by the resolved name + version


def default_cache_dir() -> Path:
    """$ONNX2TRT_CACHE_DIR, else $XDG_CACHE_HOME/onnx2trt/engines, else ~/.cache/onnx2trt/engines."""
    env = os.environ.get("ONNX2TRT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnx2trt" / "engines"


def cache_key(onnx_sha256: str, config: BuildConfig, backend: Backend) -> str:
    """A hex digest naming one engine; equal exactly when the build inputs are equal."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_KEY}
    if config.calibration_cache is not None:
        settings["calibration_cache"] = _content_digest(config.calibration_cache)
    if config.calibration_data is not None:
        from ..calib.dataset import data_fingerprint  # the images' bytes, not the list file's

        settings["calibration_data"] = data_fingerprint(config.calibration_data)
    if config.preprocess is not None and Path(config.preprocess).is_file():
        settings["preprocess"] = _content_digest(config.preprocess)
    payload = {
        "onnx": onnx_sha256,
        "config": settings,
        "backend": [backend.name, backend.version],
        "target": engine_target(backend, config),
        "onnx2trt_lib": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _content_digest(path: str) -> str:
    """sha256 of a file, or of a folder's listing (relative path, size, mtime) for data folders."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p.rglob("*")):
            if item.is_file():
                st = item.stat()
                digest.update(
                    f"{item.relative_to(p).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
                )
        return "dir:" + digest.hexdigest()
    matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else []
    if matches:  # a quoted glob of images, as calibrate takes it
        digest = hashlib.sha256()
        for item in map(Path, matches):
            if item.is_file():
                st = item.stat()
                digest.update(f"{item.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "glob:" + digest.hexdigest()
    raise UsageError(f"calibration input {path} does not exist")


class EngineCache:
    """A folder of engines by cache key. Entries that fail their sha256 check count as misses."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def engine_path(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    def get(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        """The stored engine bytes and sidecar, or None (missing or damaged entry)."""
        path = self.engine_path(key)
        if not path.is_file():
            return None
        try:
            sidecar = read_sidecar(path)
            data = path.read_bytes()
        except (OSError, EngineFileError) as exc:
            log.warning("engine cache entry %s unusable (%s); rebuilding", path.name, exc)
            return None
        if sidecar.get("engine_sha256") != hashlib.sha256(data).hexdigest():
            log.warning("engine cache entry %s does not match its sidecar; rebuilding", path.name)
            return None
        log.info("engine cache hit: %s", path)
        return data, sidecar

    def put(self, key: str, engine: bytes, sidecar: dict[str, Any]) -> Path | None:
        """Store an entry; a cache that cannot be written only costs a rebuild next time."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return save_engine(self.engine_path(key), engine, sidecar)
        except Exception as exc:  # noqa: BLE001 - OutputError, OSError: the build itself succeeded
            log.warning("could not store engine in cache %s: %s", self.root, exc)
            return None
