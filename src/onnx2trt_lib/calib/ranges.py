"""Per-tensor dynamic ranges as JSON: amax, scale, method and the histogram's statistics.

This is the human- and tool-readable companion of the TensorRT cache (which holds only
scales): it says how each range was chosen, so a suspicious tensor can be looked at.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import load_json_limited, write_text_atomic
from ..errors import CacheFormatError
from .cache import INT8_MAX

MAX_RANGES_BYTES = 256 * 2**20  # per-tensor stats of thousands of tensors are a few MiB

RANGES_FORMAT = "onnx2trt-ranges/1"
_FLOAT32_MAX = 3.4028234663852886e38


def histogram_stats(hist: Any) -> dict[str, Any]:
    """The few numbers that describe a Histogram (not its bins)."""
    return {
        "num_bins": int(hist.num_bins),
        "bin_width": float(hist.bin_width),
        "amax_seen": float(hist.amax_seen),
        "count": int(hist.count),
        "nonfinite": int(hist.nonfinite),
    }


def ranges_document(
    amax: Mapping[str, float],
    *,
    method: str,
    method_options: Mapping[str, Any] | None = None,
    histograms: Mapping[str, Any] | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    for name, value in amax.items():
        entry: dict[str, Any] = {"amax": float(value), "scale": float(value) / INT8_MAX}
        if histograms and name in histograms:
            stats = histogram_stats(histograms[name])
            if stats["amax_seen"] > 0:
                entry["clipped_fraction_of_max"] = 1.0 - float(value) / stats["amax_seen"]
            entry["histogram"] = stats
        tensors[name] = entry
    return {
        "format": RANGES_FORMAT,
        "method": method,
        "method_options": dict(method_options or {}),
        "mode": mode,
        "tensors": tensors,
    }


def write_ranges(path: str | os.PathLike, document: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def read_ranges_document(path: str | os.PathLike) -> dict[str, Any]:
    """The whole ranges JSON, checked: every tensor entry is an object with a finite amax >= 0.

    CacheFormatError (one line, naming the file) for a missing, huge, torn or foreign file.
    """
    path = Path(path)
    document = load_json_limited(
        path, limit=MAX_RANGES_BYTES, what="ranges file", error=CacheFormatError
    )
    if not isinstance(document, dict) or document.get("format") != RANGES_FORMAT:
        raise CacheFormatError(
            f"{path}: not an onnx2trt ranges file (format is not {RANGES_FORMAT})"
        )
    tensors = document.get("tensors", {})
    if not isinstance(tensors, dict):
        raise CacheFormatError(f"{path}: 'tensors' is not an object of tensor name -> entry")
    for name, entry in tensors.items():
        value = entry.get("amax") if isinstance(entry, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _FLOAT32_MAX:
            value = (
                math.inf
            )  # a 400-digit integer is not a float32 range (and float() would overflow)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise CacheFormatError(f"{path}: tensor {name!r} has no valid amax")
    return document


def read_ranges(path: str | os.PathLike) -> dict[str, float]:
    """name -> amax from a ranges JSON written by write_ranges."""
    document = read_ranges_document(path)
    return {name: float(entry["amax"]) for name, entry in document.get("tensors", {}).items()}
