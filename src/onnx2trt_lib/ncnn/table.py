"""ncnn2table's calibration table: `<layer>_param_0 s0 s1 ...` (weight scales) lines first, then
`<layer> s` (the scale of the layer's input activation); every scale is 127/threshold.

Written as ncnn2table writes it (`%f ` per value, a trailing space), except that a scale below 1
gets 9 significant digits instead of `%f`'s 6 decimals (which would print an activation range
over 254,000 as 0.000000); ncnn2int8 reads both with sscanf.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Onnx2TrtError

PARAM_SUFFIX = "_param_0"


class TableError(Onnx2TrtError):
    """A file that is not an ncnn calibration table."""


@dataclass
class NcnnTable:
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> per-channel scales
    inputs: dict[str, float] = field(default_factory=dict)  # layer -> input activation scale

    def text(self) -> str:
        lines = [
            f"{layer}{PARAM_SUFFIX} " + "".join(f"{_fmt(s)} " for s in scales)
            for layer, scales in self.weights.items()
        ]
        lines += [f"{layer} {_fmt(scale)} " for layer, scale in self.inputs.items()]
        return "\n".join(lines) + "\n"

    def parsed(self) -> NcnnTable:
        """The table as a reader gets it back (scales rounded to their printed digits)."""
        return parse_table(self.text())


def _fmt(value: float) -> str:
    v = float(np.float32(value))
    return f"{v:f}" if abs(v) >= 1 or v == 0 else f"{v:.9g}"


def parse_table(text: str, *, origin: str = "table") -> NcnnTable:
    """Read an ncnn2table table (ours or ncnn's own)."""
    table = NcnnTable()
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        key, values = tokens[0], tokens[1:]
        try:
            scales = np.array([float(v) for v in values], dtype=np.float32)
        except ValueError:
            raise TableError(
                f"{origin} line {number}: {line.strip()[:60]!r} is not `name scale ...`"
            ) from None
        if scales.size == 0:
            raise TableError(f"{origin} line {number}: {key!r} has no scale")
        if key.endswith(PARAM_SUFFIX):
            table.weights[key[: -len(PARAM_SUFFIX)]] = scales
        elif "_param_" in key:
            table.weights[key] = scales  # other weight arrays (RNN/MHA): kept by their full key
        else:
            if scales.size != 1:
                raise TableError(
                    f"{origin} line {number}: activation {key!r} has {scales.size} scales, expected 1"
                )
            table.inputs[key] = float(scales[0])
    return table


def read_table(path: str | os.PathLike) -> NcnnTable:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError(f"cannot read {path}: {exc}") from None
    return parse_table(text, origin=str(path))


def looks_like_table(path: str | os.PathLike) -> bool:
    """True for a text file whose first line is `<name>_param_N <numbers>` or `<name> <number>`."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
        first = head.decode("utf-8").splitlines()[0].split()
        return len(first) >= 2 and all(_is_number(t) for t in first[1:])
    except (OSError, UnicodeDecodeError, IndexError):
        return False


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def table_from(
    weight_scales: Mapping[str, np.ndarray], input_amax: Mapping[str, float], order: Sequence[str]
) -> NcnnTable:
    """A table for the layers in `order` (ncnn's layer order), input scales 127/amax."""
    table = NcnnTable()
    for layer in order:
        table.weights[layer] = np.asarray(weight_scales[layer], dtype=np.float32)
    for layer in order:
        table.inputs[layer] = float(np.float32(127.0 / input_amax[layer]))
    return table
