"""`BuildConfig`: everything that decides what engine a build produces, frozen and hashable.

Shapes: the one place every command parses them, in the spellings users paste:
- trtexec: `name:1x3x224x224` (one shape), several inputs separated by commas, and
  `--minShapes/--optShapes/--maxShapes` (also spelled `--min-shapes/...`);
- Polygraphy: `name:[1,3,224,224]`, several entries separated by spaces or commas, and
  `--trt-min-shapes/--trt-opt-shapes/--trt-max-shapes`;
- ours: `name:MIN/OPT/MAX` in one `--shapes` (`x:1x3x224x224/8x3x224x224/32x3x224x224`).
Each profile is one `--shapes` (or one min/opt/max triple); a build may have several profiles.
A name with colons (TensorFlow's `input:0`) may be quoted: `'input:0':1x3`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

from ..errors import UsageError

Shape = tuple[int, ...]

BACKEND_CHOICES = ("auto", "tensorrt", "tensorrt-rtx")
HARDWARE_COMPATIBILITY_CHOICES = ("ampere-plus", "same-compute-capability")
MAX_DIM = 2**63 - 1  # TensorRT Dims are int64: a larger number cannot reach it
MAX_MEMORY_SIZE = 2**50  # 1 PiB, far above any GPU's memory; a larger size is a typo


@dataclass(frozen=True)
class InputRange:
    """One input's MIN/OPT/MAX shapes inside an optimization profile."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        ranks = {len(self.min), len(self.opt), len(self.max)}
        if len(ranks) != 1:
            raise UsageError(
                f"input {self.name!r}: min/opt/max shapes have different ranks "
                f"({_fmt(self.min)}, {_fmt(self.opt)}, {_fmt(self.max)}); give the same number of dimensions"
            )
        for label, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if any(d < 0 for d in shape):
                raise UsageError(
                    f"input {self.name!r}: {label} shape {_fmt(shape)} has a negative dimension"
                )
            if any(d > MAX_DIM for d in shape):
                raise UsageError(
                    f"input {self.name!r}: {label} shape {_fmt(shape)} has a dimension above "
                    f"{MAX_DIM} (int64)"
                )
        for axis, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max, strict=True)):
            if not lo <= mid <= hi:
                raise UsageError(
                    f"input {self.name!r}: axis {axis} needs min <= opt <= max, got "
                    f"{lo} / {mid} / {hi} (shapes {_fmt(self.min)} / {_fmt(self.opt)} / {_fmt(self.max)})"
                )

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "min": list(self.min),
            "opt": list(self.opt),
            "max": list(self.max),
        }


@dataclass(frozen=True)
class Profile:
    """One optimization profile: a shape range per dynamic input (inputs sorted by name)."""

    inputs: tuple[InputRange, ...]

    def __post_init__(self) -> None:
        names = [r.name for r in self.inputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UsageError(
                f"input {dupes[0]!r} appears twice in one profile; give each input once"
            )
        object.__setattr__(self, "inputs", tuple(sorted(self.inputs, key=lambda r: r.name)))

    def get(self, name: str) -> InputRange | None:
        return next((r for r in self.inputs if r.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.inputs)

    def to_dict(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.inputs]

    @classmethod
    def from_dict(cls, data: Sequence[Mapping[str, Any]]) -> Profile:
        return cls(
            tuple(
                InputRange(d["name"], tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))
                for d in data
            )
        )


@dataclass(frozen=True)
class BuildConfig:
    """What to build. Paths are kept as given; the engine cache keys on file *contents*.

    `fp16`/`int8` mean "make this precision available": on TensorRT 10 they become builder
    flags (INT8 calibrated from `calibration_cache` or `calibration_data`); on strongly typed
    backends (TensorRT 11, TensorRT-RTX) the ONNX is rewritten by graph passes first.
    `timing_cache` only makes builds faster, so it is not part of the cache key.
    `preprocess` (a preset or config file) turns `calibration_data` images into inputs, as in
    `calibrate`; `fp16_io` makes a strongly typed FP16 engine's inputs/outputs float16 too.
    """

    fp16: bool = False
    int8: bool = False
    calibration_cache: str | None = None
    calibration_data: str | None = None
    preprocess: str | None = None
    fp16_io: bool = False
    profiles: tuple[Profile, ...] = ()
    workspace: int | None = None
    timing_cache: str | None = None
    builder_optimization_level: int | None = None
    version_compatible: bool = False
    hardware_compatibility: str | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "profiles", tuple(self.profiles))
        if self.backend not in BACKEND_CHOICES:
            raise UsageError(
                f"unknown backend {self.backend!r}; choose one of {', '.join(BACKEND_CHOICES)}"
            )
        if self.int8 and not (self.calibration_cache or self.calibration_data):
            raise UsageError(
                "--int8 needs calibration: give --cache CACHE (a calibration cache) or --data SRC"
            )
        if self.calibration_cache and self.calibration_data:
            raise UsageError("give either --cache or --data for INT8 calibration, not both")
        if (self.calibration_cache or self.calibration_data) and not self.int8:
            raise UsageError("--cache/--data are INT8 calibration inputs; add --int8 or drop them")
        if self.preprocess is not None and not self.calibration_data:
            raise UsageError("--preprocess is for --data images (INT8 calibration); add --data")
        if self.fp16_io and not self.fp16:
            raise UsageError("--fp16-io makes FP16 engine inputs/outputs float16; add --fp16")
        if self.workspace is not None and not 0 < self.workspace <= MAX_MEMORY_SIZE:
            raise UsageError(
                f"workspace must be a positive number of bytes up to {MAX_MEMORY_SIZE} (1 PiB), "
                f"got {self.workspace}"
            )
        level = self.builder_optimization_level
        if level is not None and not 0 <= level <= 5:
            raise UsageError(f"builder optimization level must be 0..5, got {level}")
        hw = self.hardware_compatibility
        if hw is not None and hw not in HARDWARE_COMPATIBILITY_CHOICES:
            raise UsageError(
                f"unknown hardware compatibility {hw!r}; choose one of {', '.join(HARDWARE_COMPATIBILITY_CHOICES)}"
            )
        for profile in self.profiles:
            if not isinstance(profile, Profile):
                raise UsageError(f"profiles must be Profile objects, got {type(profile).__name__}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["profiles"] = [p.to_dict() for p in self.profiles]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown build config keys: {', '.join(unknown)}")
        kwargs = dict(data)
        kwargs["profiles"] = tuple(Profile.from_dict(p) for p in data.get("profiles", ()))
        return cls(**kwargs)

    def replace(self, **changes: Any) -> BuildConfig:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return BuildConfig(**values)


# ---------------------------------------------------------------- parsing trtexec spellings

_DIMS = re.compile(r"^\d+(x\d+)*$")
_BRACKETS = re.compile(r"^\[\s*(\d+(\s*,\s*\d+)*)?\s*\]$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_dims(text: str, *, where: str = "shape") -> Shape:
    """`1x3x224x224` -> (1, 3, 224, 224); a scalar input is written as an empty string."""
    given = text.strip()
    text = given.lower()  # 2x4X5 was accepted by calibrate's --shape
    if text == "" or text.replace(" ", "") == "[]":
        return ()
    if _BRACKETS.match(text):  # Polygraphy's [1,3,224,224]
        text = "x".join(p.strip() for p in text[1:-1].split(","))
    if not _DIMS.match(text):
        raise UsageError(
            f"{where}: {given!r} is not a shape like 1x3x224x224 or [1,3,224,224] (non-negative integers)"
        )
    # int() refuses strings of over 4300 digits (ValueError): drop leading zeros, test the length first
    parts = [p.lstrip("0") or "0" for p in text.split("x")]
    if any(len(p) > len(str(MAX_DIM)) or int(p) > MAX_DIM for p in parts):
        raise UsageError(
            f"{where}: {given!r} has a dimension above {MAX_DIM}, the int64 limit of TensorRT shapes"
        )
    return tuple(int(p) for p in parts)


def _split_entries(spec: str) -> list[tuple[str, str]]:
    """`a:1x3,b:2x4` -> [("a", "1x3"), ("b", "2x4")]; the name is everything before the last colon.

    A name with colons (TensorFlow's `input:0`) works, and may be quoted: `'input:0':1x3`.
    """
    entries = []
    for raw in _split_outside_brackets(spec):
        raw = raw.strip()
        if not raw:
            continue
        name, sep, dims = raw.rpartition(":")
        name = name.strip().strip("'\"")
        if not sep or not name:
            raise UsageError(f"shape spec {raw!r} needs the form name:1x3x224x224")
        entries.append((name, dims))
    if not entries:
        raise UsageError(f"empty shape spec {spec!r}; use name:1x3x224x224")
    return entries


def _split_outside_brackets(spec: str) -> list[str]:
    """Entries separated by commas (trtexec) or spaces (Polygraphy), never inside [...] or quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in spec:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)
        elif depth == 0 and (char == "," or char.isspace()):
            if "".join(current).strip():
                parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def parse_shapes(spec: str) -> dict[str, Shape]:
    """trtexec `--optShapes` style: `name:1x3x224x224,other:1x10` -> {name: shape}."""
    out: dict[str, Shape] = {}
    for name, dims in _split_entries(spec):
        if name in out:
            raise UsageError(f"input {name!r} appears twice in {spec!r}")
        out[name] = parse_dims(dims, where=f"input {name!r}")
    return out


def parse_profile(spec: str) -> Profile:
    """`--shapes name:MIN/OPT/MAX,other:1x10` -> Profile; a single shape means a fixed shape."""
    ranges = []
    seen = set()
    for name, dims in _split_entries(spec):
        if name in seen:
            raise UsageError(f"input {name!r} appears twice in {spec!r}")
        seen.add(name)
        parts = dims.split("/")
        if len(parts) == 1:
            shape = parse_dims(parts[0], where=f"input {name!r}")
            ranges.append(InputRange(name, shape, shape, shape))
        elif len(parts) == 3:
            lo, mid, hi = (parse_dims(p, where=f"input {name!r}") for p in parts)
            ranges.append(InputRange(name, lo, mid, hi))
        else:
            raise UsageError(
                f"input {name!r}: {dims!r} needs one shape or MIN/OPT/MAX (three shapes joined by '/')"
            )
    return Profile(tuple(ranges))


def profile_from_min_opt_max(
    min_spec: str | None, opt_spec: str | None, max_spec: str | None
) -> Profile:
    """trtexec `--minShapes/--optShapes/--maxShapes`: every input needs all three, or only OPT.

    Given only OPT, MIN and MAX equal it (a fixed shape), as in trtexec.
    """
    if opt_spec is None:
        raise UsageError("--min-shapes/--max-shapes need --opt-shapes too (name:1x3x224x224)")
    opt = parse_shapes(opt_spec)
    lo = parse_shapes(min_spec) if min_spec is not None else dict(opt)
    hi = parse_shapes(max_spec) if max_spec is not None else dict(opt)
    for label, table in (("--min-shapes", lo), ("--max-shapes", hi)):
        missing = sorted(set(opt) - set(table))
        extra = sorted(set(table) - set(opt))
        if missing:
            raise UsageError(
                f"input {missing[0]!r} has --opt-shapes but no {label}; give all three for each input"
            )
        if extra:
            raise UsageError(
                f"input {extra[0]!r} has {label} but no --opt-shapes; give all three for each input"
            )
    return Profile(tuple(InputRange(n, lo[n], opt[n], hi[n]) for n in opt))


def profiles_from_specs(
    shapes: Iterable[str] = (),
    min_shapes: Sequence[str] = (),
    opt_shapes: Sequence[str] = (),
    max_shapes: Sequence[str] = (),
) -> tuple[Profile, ...]:
    """All profiles from repeated CLI options: each `--shapes`, then each min/opt/max triple."""
    profiles = [parse_profile(s) for s in shapes]
    min_shapes, opt_shapes, max_shapes = list(min_shapes), list(opt_shapes), list(max_shapes)
    if min_shapes or max_shapes or opt_shapes:
        if len(min_shapes) > len(opt_shapes) or len(max_shapes) > len(opt_shapes):
            raise UsageError(
                "each --min-shapes/--max-shapes needs its own --opt-shapes (one triple per profile)"
            )
        for i, opt in enumerate(opt_shapes):
            lo = min_shapes[i] if i < len(min_shapes) else None
            hi = max_shapes[i] if i < len(max_shapes) else None
            profiles.append(profile_from_min_opt_max(lo, opt, hi))
    return tuple(profiles)


def parse_memory_size(text: str | int) -> int:
    """`1G`, `512M`, `1.5GiB`, `4096` (bytes) -> bytes. Units are binary (1K = 1024), as in trtexec."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise UsageError(f"memory size {text!r} is not like 1G, 512M, 1.5GiB or a byte count")
        # Decimal, not float: exact, and never inf (int(inf) raises); huge values stop here
        amount = Decimal(match.group(1)) * _UNITS[match.group(2).lower()]
        value = int(amount) if amount <= MAX_MEMORY_SIZE else MAX_MEMORY_SIZE + 1
    if value <= 0:
        raise UsageError(f"memory size {text!r} must be positive")
    if value > MAX_MEMORY_SIZE:
        raise UsageError(f"memory size {text!r} is more than 1 PiB; give a size like 1G or 512M")
    return value


def _fmt(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def format_shape(shape: Sequence[int]) -> str:
    """(1, -1, 224) -> `1x?x224`: how shapes appear in messages."""
    return "x".join("?" if d < 0 else str(d) for d in shape) or "scalar"
