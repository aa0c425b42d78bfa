"""Calibration state: per-tensor histograms that save, load and merge exactly.

Runs over parts of a data set (or a later run with more data) combine into one calibration.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write, load_arrays, load_json_limited
from ..errors import CalibrationError
from ._threads import tensor_pool
from .methods import ZERO_AMAX

STATE_FORMAT = "onnx2trt-calib-state/1"
# histograms of thousands of tensors fit easily; a bigger .json is not a state this library wrote
MAX_STATE_JSON_BYTES = 256 * 2**20


@dataclass
class CalibrationState:
    """Per-tensor histograms plus how they were made; merge() combines runs over parts of the data."""

    histograms: dict[str, Any] = field(default_factory=dict)
    mode: str = "single-pass"
    num_batches: int = 0
    num_samples: int = 0
    sources: list[str] = field(default_factory=list)
    # the histograms after part of the data (CollectOptions.snapshot), for the convergence report
    partial: CalibrationState | None = field(default=None, repr=False, compare=False)
    # the FP32 outputs of the first rows (CollectOptions.keep_outputs; not saved, not merged)
    outputs: Any = field(default=None, repr=False, compare=False)

    def merge(self, other: CalibrationState) -> CalibrationState:
        names = list(self.histograms) + [n for n in other.histograms if n not in self.histograms]
        merged = {}
        for name in names:
            mine, theirs = self.histograms.get(name), other.histograms.get(name)
            merged[name] = (
                mine.merge(theirs) if mine is not None and theirs is not None else (mine or theirs)
            )
        mode = self.mode if self.mode == other.mode else "merged"
        return CalibrationState(
            merged,
            mode,
            self.num_batches + other.num_batches,
            self.num_samples + other.num_samples,
            self.sources + other.sources,
        )

    def compute_amax(self, method: str = "entropy", **options: Any) -> dict[str, float]:
        """amax of every tensor; the searches (numba, GIL released) run side by side on the tensor pool."""

        def one(item: tuple[str, Any]) -> float:
            name, hist = item
            if (
                hist.count == 0 and hist.nonfinite == 0
            ):  # a zero-size tensor (a dim of 0): nothing to range
                return ZERO_AMAX
            try:
                return float(hist.compute_amax(method, **dict(options)))
            except CalibrationError as exc:
                raise CalibrationError(f"tensor {name!r}: {exc}") from None

        items = list(self.histograms.items())
        pool, _ = tensor_pool()
        values = (
            list(pool.map(one, items))
            if pool is not None and len(items) > 1
            else [one(i) for i in items]
        )
        return {name: value for (name, _), value in zip(items, values, strict=True)}

    @property
    def exact(self) -> bool:
        """Two-pass with power-of-two ranges: merges with any other exact state into exactly the
        state of all their data together (no need to start other runs at these ranges)."""
        return self.mode == "two-pass" and all(
            h.range_max == 0 or math.frexp(h.range_max)[0] == 0.5 for h in self.histograms.values()
        )

    def ranges(self) -> dict[str, float]:
        """Each histogram's current top edge: start other collections here so their states merge exactly."""
        return {name: float(h.range_max) for name, h in self.histograms.items()}

    # -- persistence: state_dict arrays go into .npz as arrays, everything else into one JSON header
    def _header(self) -> dict[str, Any]:
        # only what the data decides: no batch count, source names or times, so that the same
        # samples give the same bytes however they were batched, split and merged
        return {
            "format": STATE_FORMAT,
            "mode": self.mode,
            "num_samples": self.num_samples,
            "tensors": list(self.histograms),
        }

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        states = {name: h.state_dict() for name, h in self.histograms.items()}
        if path.suffix.lower() == ".json":
            payload = self._header()
            payload["tensors"] = {name: _jsonable(state) for name, state in states.items()}
            with atomic_write(path, "w") as handle:
                json.dump(payload, handle)
            return
        arrays: dict[str, Any] = {}  # Any: np.savez(**arrays) would be checked against allow_pickle
        scalars: dict[str, dict[str, Any]] = {}
        for index, (name, state) in enumerate(states.items()):
            scalars[name] = {}
            for key, value in state.items():
                if key == "counts":
                    value = np.asarray(value, dtype=np.int64)
                if isinstance(value, np.ndarray):
                    arrays[f"t{index}/{key}"] = value
                else:
                    scalars[name][key] = _jsonable(value)
        header = self._header()
        header["scalars"] = scalars
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with atomic_write(path, "wb") as handle:
            _savez_stable(handle, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationState:
        from . import Histogram

        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"calibration state {path}: no such file")
        what = "calibration state"
        try:
            if path.suffix.lower() == ".json":
                payload = load_json_limited(
                    path, limit=MAX_STATE_JSON_BYTES, what=what, error=CalibrationError
                )
                tensors = {
                    name: _from_jsonable(state) for name, state in payload["tensors"].items()
                }
            else:
                data = load_arrays(path, what=what, error=CalibrationError)
                if not isinstance(data, dict):
                    raise ValueError("a single .npy array, not a saved state (.npz)")
                payload = json.loads(bytes(data["__header__"]).decode())
                tensors = {}
                for index, name in enumerate(payload["tensors"]):
                    state = dict(payload["scalars"][name])
                    prefix = f"t{index}/"
                    for key, value in data.items():
                        if key.startswith(prefix):
                            state[key[len(prefix) :]] = value
                    tensors[name] = state
            if payload.get("format") != STATE_FORMAT:
                raise ValueError(f"format {payload.get('format')!r} is not {STATE_FORMAT}")
            histograms = {name: Histogram.from_state(state) for name, state in tensors.items()}
            if not isinstance(payload["mode"], str):
                raise TypeError(f"mode {payload['mode']!r} is not a string")
            return cls(
                histograms,
                payload["mode"],
                _count(payload, "num_batches", default=0),
                _count(payload, "num_samples"),
                list(payload.get("sources", [])),
            )
        except (
            KeyError,
            ValueError,
            TypeError,
            AttributeError,
            OSError,
            RecursionError,
            OverflowError,
            MemoryError,
        ) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CalibrationError(
                f"calibration state {path}: not a saved onnx2trt state ({reason})"
            ) from None


def _count(payload: dict, key: str, default: int | None = None) -> int:
    """A non-negative integer field (merging adds them: a string or list would fail later)."""
    value = payload[key] if default is None else payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise TypeError(f"{key} {value!r} is not a count")
    return int(value)


def _savez_stable(handle: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez without its one varying byte source: the zip entries' time stamps (fixed here)."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # the same bytes on every platform
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        if "__float__" in value:
            return float(value["__float__"])
        return {k: _from_jsonable(v) for k, v in value.items()}
    return value
