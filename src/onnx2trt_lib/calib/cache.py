"""TensorRT calibration cache: the exact text format TensorRT reads and writes.

Format (checked on caches written by TensorRT 6 and 8, see ../shared/data/trt_caches):

    TRT-<version>-<Algorithm>            e.g. TRT-8001-EntropyCalibration2
    <tensor name>: <8 lowercase hex>     one line per tensor, LF, trailing newline

The hex is the big-endian IEEE-754 float32 bit pattern of the *scale* = amax / 127.
Tensor names may contain ": " themselves, so a line splits at the LAST ": ".
Values are kept as raw uint32 bit patterns so any cache (NaN payloads, subnormals,
+inf in MinMax caches) round-trips byte for byte.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._io import read_bytes_limited, write_bytes_atomic
from ..errors import CacheFormatError, CalibrationError

# The scale TensorRT stores is amax / 127 (symmetric INT8, [-127, 127]).
INT8_MAX = 127.0
DEFAULT_ALGORITHM = "EntropyCalibration2"
# Used when no TensorRT is importable to say which version will read the cache.
DEFAULT_TRT_VERSION = "10.3.0"
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
# A cache line is ~20-100 bytes: 32 MiB is hundreds of thousands of tensors, far beyond any real model.
MAX_CACHE_BYTES = 32 * 2**20

log = logging.getLogger(__name__)

_HEADER = re.compile(r"^TRT-([0-9]+)-([A-Za-z0-9_]+)$")  # [0-9]: \d takes any script's digits
_HEX = re.compile(r"^[0-9a-fA-F]{8}$")


def trt_version_number(version: str | int) -> str:
    """'8.0.1' -> '8001', '7.2.3' -> '7203', '10.3.0' -> '100300' (TensorRT's header convention).

    Up to TensorRT 8 the number is major*1000 + minor*100 + patch; TensorRT 10 switched to
    major*10000 + minor*100 + patch. A string of digits is taken as already encoded.
    """
    text = str(version).strip()
    if re.fullmatch(r"[0-9]{1,9}", text):  # ASCII only: str.isdigit takes any script's digits
        return str(int(text))
    match = re.fullmatch(r"([0-9]{1,2})(?:\.([0-9]{1,2})(?:\.([0-9]{1,2}))?)?(?:\.[0-9]+)?", text)
    if match is None:
        raise CacheFormatError(
            f"TensorRT version {version!r} is not like 10.3.0; pass major.minor.patch "
            "(each 0-99, as TensorRT numbers its releases)"
        )
    major, minor, patch = (int(g or 0) for g in match.groups())
    if major >= 10:
        return str(major * 10000 + minor * 100 + patch)
    return str(major * 1000 + minor * 100 + patch)


def installed_trt_version() -> str | None:
    """The version of an importable `tensorrt` (never tensorrt_rtx: it reads no INT8 caches)."""
    from .._optional import available, tensorrt

    if not available("tensorrt"):
        return None
    version = getattr(tensorrt(), "__version__", None)
    return str(version) if version else None


def float_to_bits(value: float) -> int:
    return struct.unpack(">I", struct.pack(">f", value))[0]


def bits_to_float(bits: int) -> float:
    return struct.unpack(">f", struct.pack(">I", bits))[0]


@dataclass(frozen=True)
class CalibrationCache:
    """One parsed cache: header fields and tensor name -> scale bits (in file order)."""

    version: str = field(default_factory=lambda: trt_version_number(DEFAULT_TRT_VERSION))
    algorithm: str = DEFAULT_ALGORITHM
    bits: Mapping[str, int] = field(default_factory=dict)

    @property
    def header(self) -> str:
        return f"TRT-{self.version}-{self.algorithm}"

    @property
    def scales(self) -> dict[str, float]:
        return {name: bits_to_float(b) for name, b in self.bits.items()}

    @property
    def amax(self) -> dict[str, float]:
        """amax = scale * 127 (in float64; the scale is what TensorRT actually uses)."""
        return {name: s * INT8_MAX for name, s in self.scales.items()}

    @classmethod
    def from_amax(
        cls,
        amax: Mapping[str, float],
        *,
        version: str | int | None = None,
        algorithm: str = DEFAULT_ALGORITHM,
    ) -> CalibrationCache:
        """Build a cache from per-tensor amax; version None = installed tensorrt, else the default."""
        if version is None:
            version = installed_trt_version() or DEFAULT_TRT_VERSION
        bits = {}
        for name, value in amax.items():
            _check_name(name)
            try:
                bits[name] = float_to_bits(float(value) / INT8_MAX)
            except OverflowError:
                raise CalibrationError(
                    f"tensor {name!r}: amax {value!r} gives a scale beyond float32"
                ) from None
        odd = [name for name in bits if ": " in name]
        if odd:  # TensorRT splits at the last ": "; ModelOpt's import_scales_from_calib_cache splits at every one
            log.warning(
                "%d tensor name(s) contain ': ' (e.g. %r): TensorRT reads them, ModelOpt's cache reader cannot",
                len(odd),
                odd[0],
            )
        return cls(version=trt_version_number(version), algorithm=algorithm, bits=bits)

    def to_bytes(self) -> bytes:
        lines = [self.header]
        lines += [f"{name}: {bits:08x}" for name, bits in self.bits.items()]
        return ("\n".join(lines) + "\n").encode("ascii" if _ascii(self.bits) else "utf-8")


def _ascii(names: Mapping[str, int]) -> bool:
    return all(name.isascii() for name in names)


def _check_name(name: str) -> None:
    if not name or "\n" in name or "\r" in name:
        raise CacheFormatError(
            f"tensor name {name!r} cannot be written to a calibration cache (empty or has a newline)"
        )


def parse_cache(data: bytes | str, *, source: str = "<cache>") -> CalibrationCache:
    """Parse cache text; CacheFormatError says which line of `source` is wrong and how."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line_no = data[: exc.start].count(b"\n") + 1
            raise CacheFormatError(
                f"{source}:{line_no}: not text (byte {exc.start}); is this a calibration cache?"
            ) from None
    else:
        text = data
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise CacheFormatError(
            f"{source}:1: empty file; expected a header like TRT-8001-EntropyCalibration2"
        )
    header = lines[0].rstrip("\r")
    match = _HEADER.match(header)
    if not match:
        raise CacheFormatError(
            f"{source}:1: header {header[:60]!r} is not TRT-<version>-<Algorithm> (e.g. TRT-8001-EntropyCalibration2)"
        )
    bits: dict[str, int] = {}
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip("\r")
        name, sep, value = line.rpartition(": ")
        if not sep or not name:
            raise CacheFormatError(
                f"{source}:{number}: expected '<tensor name>: <8 hex digits>', got {line[:60]!r}"
            )
        if not _HEX.match(value):
            raise CacheFormatError(
                f"{source}:{number}: {value[:20]!r} is not 8 hex digits (tensor {name!r})"
            )
        if name in bits:
            raise CacheFormatError(
                f"{source}:{number}: tensor {name!r} appears twice; remove one line"
            )
        bits[name] = int(value, 16)
    return CalibrationCache(version=match.group(1), algorithm=match.group(2), bits=bits)


def read_cache(path: str | os.PathLike) -> CalibrationCache:
    path = Path(path)
    try:
        data = read_bytes_limited(
            path, limit=MAX_CACHE_BYTES, what="calibration cache", error=CacheFormatError
        )
    except FileNotFoundError:
        raise CacheFormatError(f"{path}: no such calibration cache") from None
    except IsADirectoryError:
        raise CacheFormatError(f"{path}: is a directory, not a calibration cache") from None
    except OSError as exc:
        raise CacheFormatError(
            f"{path}: cannot read the calibration cache ({exc.strerror or exc})"
        ) from None
    return parse_cache(data, source=str(path))


def write_cache(path: str | os.PathLike, cache: CalibrationCache) -> None:
    write_bytes_atomic(path, cache.to_bytes())
