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

from .._io import load_json_limited, write_text_atomic
from ..errors import Onnx2TrtError

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "onnx2trt-calib-sidecar/1"
SIDECAR_SUFFIX = ".calib.json"
MAX_SIDECAR_BYTES = 16 * 2**20  # a real sidecar is ~1 KiB


def sidecar_path(cache_path: str | os.PathLike) -> Path:
    path = Path(cache_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
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
    """Record `key` and the sha256 of the cache and of each side output (ranges, state) written with it."""
    path = sidecar_path(cache_path)
    document = {
        "format": SIDECAR_FORMAT,
        "key": dict(key),
        "cache_sha256": file_sha256(cache_path),
        **dict(extra or {}),
    }
    if side_outputs:
        document["side_outputs"] = {role: file_sha256(p) for role, p in side_outputs.items()}
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
    """True when the cache exists, is the one the sidecar describes, and was made from `key`.

    Each requested side output (role -> path) must also be the very file written with this cache,
    or a hit would hand back a ranges/state file from another run. A key with no data fingerprint
    (a one-shot generator) never hits: its data is unknown.
    """
    cache_path = Path(cache_path)
    if key.get("data_fingerprint") is None or not cache_path.is_file():
        return False
    document = read_sidecar(cache_path)
    if document is None:
        log.info("no usable sidecar beside %s: recomputing", cache_path)
        return False
    if document.get("cache_sha256") != file_sha256(cache_path):
        log.info("%s changed since it was written: recomputing", cache_path)
        return False
    recorded = document["key"]
    changed = sorted(k for k in set(recorded) | set(key) if recorded.get(k) != key.get(k))
    if changed:
        log.info("calibration inputs changed (%s): recomputing", ", ".join(changed))
        return False
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
            return False
    return True
