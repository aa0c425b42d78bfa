"""The calibration sidecar: what a cache was computed from, so a matching one is reused.

`<cache>.calib.json` records the model's sha256, the data fingerprint, the preprocessing,
the method and its options, shapes, batch size and the library version, plus the sha256 of
the cache it describes (a hand-edited cache is a miss). `calibrate` compares the recorded
key with the new one: equal -> cache hit (instant), anything different -> recompute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import (
    check_regular_file,
    folder_lock,
    load_json_limited,
    read_bytes_limited,
    write_text_atomic,
    written_path,
)
from ..errors import Onnx2TrtError
from .cache import MAX_CACHE_BYTES

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "onnx2trt-calib-sidecar/1"
SIDECAR_SUFFIX = ".calib.json"
MAX_SIDECAR_BYTES = 16 * 2**20  # a real sidecar is ~1 KiB


def sidecar_path(cache_path: str | os.PathLike) -> Path:
    path = Path(cache_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    check_regular_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def make_key(
    *,
    model_sha256: str,
    data_fingerprint: str | None,
    preprocess: Mapping[str, Any] | None,
    method: str,
    method_options: Mapping[str, Any],
    shapes: Mapping[str, Any] | None,
    batch_size: int | None,
    settings: Mapping[str, Any],
    library_version: str,
) -> dict[str, Any]:
    """Everything that changes the cache's contents; JSON-normalised so it compares after a round trip."""
    key = {
        "model_sha256": model_sha256,
        "data_fingerprint": data_fingerprint,
        "preprocess": dict(preprocess) if preprocess else None,
        "method": method,
        "method_options": dict(method_options),
        "shapes": {k: list(v) for k, v in shapes.items()} if shapes else None,
        "batch_size": batch_size,
        "settings": dict(settings),
        "library_version": library_version,
    }
    return json.loads(json.dumps(key, sort_keys=True))


def write_sidecar(
    cache_path: str | os.PathLike,
    key: Mapping[str, Any],
    *,
    extra: Mapping[str, Any] | None = None,
    side_outputs: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Record `key` and the sha256 of the cache and of each side output (ranges, state) written with it.

    Call inside the `output_set` that wrote them, so the hashes are of this run's bytes."""
    path = sidecar_path(cache_path)
    # written_path: inside an output_set the bytes this run wrote, not whatever is on disk now
    document = {
        "format": SIDECAR_FORMAT,
        "key": dict(key),
        "cache_sha256": file_sha256(written_path(cache_path)),
        **dict(extra or {}),
    }
    if side_outputs:
        document["side_outputs"] = {
            role: file_sha256(written_path(p)) for role, p in side_outputs.items()
        }
    write_text_atomic(path, json.dumps(document, indent=1, sort_keys=True) + "\n")
    return path


def read_sidecar(cache_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar beside `cache_path`, or None when it is missing, unreadable, too big or not ours.

    A returned document has a dict under "key": a sidecar is only a hint, so anything odd is a miss.
    """
    path = sidecar_path(cache_path)
    try:
        document = load_json_limited(path, limit=MAX_SIDECAR_BYTES, what="calibration sidecar")
    except Onnx2TrtError as exc:
        log.debug("ignoring sidecar: %s", exc)
        return None
    if not isinstance(document, dict) or document.get("format") != SIDECAR_FORMAT:
        return None
    return document if isinstance(document.get("key"), dict) else None


def cache_hit(
    cache_path: str | os.PathLike,
    key: Mapping[str, Any],
    *,
    side_outputs: Mapping[str, str | os.PathLike] | None = None,
) -> bool:
    """True when the cache exists, is the one the sidecar describes, and was made from `key`."""
    return cached_bytes(cache_path, key, side_outputs=side_outputs) is not None


def cached_bytes(
    cache_path: str | os.PathLike,
    key: Mapping[str, Any],
    *,
    side_outputs: Mapping[str, str | os.PathLike] | None = None,
) -> bytes | None:
    """The cache's bytes on a hit, else None: the bytes returned are the very bytes hashed.

    A hit needs the cache to be the one the sidecar describes and made from `key`; each
    requested side output (role -> path) must also be the very file written with this cache,
    or a hit would hand back a ranges/state file from another run. Everything is read under
    the folder's shared lock, so a concurrent run publishing its set is seen whole or not at
    all. A key with no data fingerprint (a one-shot generator) never hits: its data is unknown.
    """
    cache_path = Path(cache_path)
    if key.get("data_fingerprint") is None or not cache_path.is_file():
        return None
    with folder_lock(cache_path):
        document = read_sidecar(cache_path)
        if document is None:
            log.info("no usable sidecar beside %s: recomputing", cache_path)
            return None
        try:
            data = read_bytes_limited(cache_path, limit=MAX_CACHE_BYTES, what="calibration cache")
        except (OSError, Onnx2TrtError):
            return None
        if document.get("cache_sha256") != hashlib.sha256(data).hexdigest():
            log.info("%s changed since it was written: recomputing", cache_path)
            return None
        recorded = document["key"]
        changed = sorted(k for k in set(recorded) | set(key) if recorded.get(k) != key.get(k))
        if changed:
            log.info("calibration inputs changed (%s): recomputing", ", ".join(changed))
            return None
        sides = document.get("side_outputs")
        recorded_sides = sides if isinstance(sides, dict) else {}
        for role, side in (side_outputs or {}).items():
            if not Path(side).is_file() or recorded_sides.get(role) != file_sha256(side):
                log.info(
                    "%s is missing or not the %s file written with %s: recomputing",
                    side,
                    role,
                    cache_path,
                )
                return None
    return data
