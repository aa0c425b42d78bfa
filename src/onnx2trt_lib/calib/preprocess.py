"""Declared image preprocessing: what the model's training pipeline did, as data, not code.

A `Preprocess` says how to turn a decoded image into one model input sample: size and
resize mode, channel order, scale, mean/std, layout and dtype. Presets cover common
families; a JSON/TOML file can start from a preset and override fields:

    {"preset": "imagenet", "size": [224, 224], "color": "BGR"}

Pillow decodes; grayscale, palette, RGBA (composited on white), CMYK and 16-bit images are
converted to the channel count the model wants.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import load_json_limited, read_bytes_limited
from ..errors import UsageError

RESIZE_MODES = ("stretch", "letterbox", "letterbox-topleft", "fit-height", "center-crop")
# torchvision's ImageNet evaluation: Resize(256) then CenterCrop(224)
CROP_FRACTION = 0.875
COLORS = ("RGB", "BGR", "GRAY")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float16", "uint8")
MAX_CONFIG_BYTES = 2**20  # a preprocessing config is a dozen settings


@dataclass(frozen=True)
class Preprocess:
    """out = ((pixel * scale) - mean) / std, per channel, after resizing to `size` (height, width).

    size None takes the height and width from the model input's calibration shape.
    letterbox keeps the aspect ratio and pads with `pad_value` (in raw 0..255 pixels),
    centred; letterbox-topleft pads right and bottom. fit-height is PaddleOCR's recogniser
    (resize_norm_img): full height, width ceil(height * w / h) squeezed to the size's width when
    wider, padded right. center-crop is torchvision's ImageNet evaluation: the shorter side resized
    to max(size) / 0.875 (256 for 224), then the centre cut out. dtype uint8 gives the resized 0..255 pixels: scale, mean and std are
    not applied.
    """

    size: tuple[int, int] | None = None
    resize: str = "stretch"
    pad_value: float = 0.0
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)  # one value: any color (GRAY too)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_choice("resize", self.resize, RESIZE_MODES)
        _check_choice("color", self.color, COLORS)
        _check_choice("layout", self.layout, LAYOUTS)
        _check_choice("dtype", self.dtype, DTYPES)
        if self.size is not None:
            size = list(self.size) if isinstance(self.size, (list, tuple, np.ndarray)) else ()
            if len(size) != 2 or not all(
                _is_number(v) and v > 0 and float(v).is_integer() for v in size
            ):
                raise UsageError(
                    f"preprocess size {self.size!r} must be [height, width] with positive integers"
                )
            object.__setattr__(self, "size", tuple(int(v) for v in size))
        for what in ("scale", "pad_value"):
            value = getattr(self, what)
            if not _is_number(value):
                raise UsageError(f"preprocess {what} {value!r} must be a finite number")
            object.__setattr__(self, what, float(value))
        if self.scale == 0:
            raise UsageError("preprocess scale is 0; every pixel would be the same value")
        for what in ("mean", "std"):
            value = getattr(self, what)
            values = [value] if _is_number(value) else value  # one number: all channels
            if not isinstance(values, (list, tuple, np.ndarray)) or not all(
                _is_number(v) for v in values
            ):
                raise UsageError(
                    f"preprocess {what} {value!r} must be a finite number or a list of them"
                )
            object.__setattr__(self, what, tuple(float(v) for v in values))
        if any(v == 0 for v in self.std):
            raise UsageError("preprocess std has a zero; std divides the pixels")
        if len(self.mean) not in (1, self.channels) or len(self.std) not in (1, self.channels):
            raise UsageError(
                f"preprocess mean/std have {len(self.mean)}/{len(self.std)} values but color {self.color} has "
                f"{self.channels} channels; give one value or one per channel"
            )

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["size"] = list(self.size) if self.size else None
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    def with_size(self, size: tuple[int, int]) -> Preprocess:
        return dataclasses.replace(self, size=size)

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample without the batch dimension."""
        if self.size is None:
            raise UsageError("preprocess has no size; give size or a model input shape")
        h, w = self.size
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    def apply(self, image: Any) -> np.ndarray:
        """A decoded PIL image -> one sample (CHW or HWC) in `dtype`."""
        if self.size is None:
            raise UsageError("preprocess has no size; give size or a model input shape")
        image = to_mode(image, "L" if self.color == "GRAY" else "RGB")
        pixels = _resize(image, self.size, self.resize, self.pad_value)
        if self.color == "GRAY":
            pixels = pixels[:, :, None]
        elif self.color == "BGR":
            pixels = pixels[:, :, ::-1]
        out: np.ndarray
        if self.dtype == "uint8":
            out = pixels.astype(np.uint8)
        else:
            mean = np.asarray(self.mean, np.float32)
            std = np.asarray(self.std, np.float32)
            out = ((pixels.astype(np.float32) * np.float32(self.scale)) - mean) / std
            out = out.astype(self.dtype)
        if self.layout == "NCHW":
            out = out.transpose(2, 0, 1)
        return np.ascontiguousarray(out)


def _is_number(value: Any) -> bool:
    """A finite int or float (bool and numeric strings are not: a typo must not pass)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def to_mode(image: Any, mode: str) -> Any:
    """Convert any Pillow mode to L or RGB.

    16-bit images map 0..65535 onto 0..255 (as OpenCV and Pillow's own 8-bit conversions do), so
    a dark 16-bit image stays dark; only float images, whose range is unknown, are stretched
    from their min..max.
    """
    from PIL import Image

    if image.mode == mode:
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if image.mode != "F" and lo >= 0 and hi <= 65535:
            arr = arr * (255.0 / 65535.0)
        else:
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(
            background, image
        )  # transparent pixels become white, as viewers show them
    try:
        return image.convert(mode)
    except ValueError:  # no direct conversion (e.g. a CIELab TIFF's LAB to L): through RGB
        return image.convert("RGB").convert(mode)


def _resize(image: Any, size: tuple[int, int], mode: str, pad_value: float) -> np.ndarray:
    from PIL import Image

    height, width = size
    if mode == "stretch":
        return np.asarray(
            image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32
        )
    if mode == "center-crop":  # torchvision Resize(short) + CenterCrop((height, width))
        short = round(max(height, width) / CROP_FRACTION)  # 256 for 224: covers the crop either way
        if image.width <= image.height:
            new_w, new_h = short, int(short * image.height / image.width)
        else:
            new_w, new_h = int(short * image.width / image.height), short
        resized = np.asarray(
            image.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32
        )
        top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
        return np.ascontiguousarray(resized[top : top + height, left : left + width])
    if mode == "fit-height":  # PaddleOCR rec: math.ceil(imgH * (w / float(h))), at most imgW
        new_w, new_h = min(width, math.ceil(height * (image.width / image.height))), height
        resized = np.asarray(
            image.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32
        )
        canvas = np.full((height, width, *resized.shape[2:]), pad_value, dtype=np.float32)
        canvas[:, :new_w] = resized
        return canvas
    ratio = min(width / image.width, height / image.height)
    new_w = max(1, min(width, round(image.width * ratio)))
    new_h = max(1, min(height, round(image.height * ratio)))
    resized = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32)
    channels = () if resized.ndim == 2 else (resized.shape[2],)
    canvas = np.full((height, width, *channels), pad_value, dtype=np.float32)
    top, left = ((height - new_h) // 2, (width - new_w) // 2) if mode == "letterbox" else (0, 0)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"preprocess {what} {value!r} is not one of {', '.join(choices)}")


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS: dict[str, Preprocess] = {
    # torchvision classification models, as evaluated: shorter side to size/0.875, centre crop
    "imagenet": Preprocess(
        resize="center-crop", color="RGB", mean=_IMAGENET_MEAN, std=_IMAGENET_STD
    ),
    # ultralytics YOLO: letterbox with grey 114, RGB, 0..1
    "yolo": Preprocess(resize="letterbox", pad_value=114.0, color="RGB"),
    # PaddleOCR text detector (PP-OCR det): BGR from OpenCV, ImageNet mean/std
    "paddleocr": Preprocess(resize="stretch", color="BGR", mean=_IMAGENET_MEAN, std=_IMAGENET_STD),
    # PaddleOCR text recogniser (PP-OCR rec): full height, keep aspect up to the width (wider lines are
    # squeezed), pad right with 0 after (x/255-0.5)/0.5
    "paddleocr-rec": Preprocess(
        resize="fit-height", pad_value=127.5, color="BGR", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    ),
}

_FIELDS = {f.name for f in dataclasses.fields(Preprocess)}


def preprocess_from_dict(
    data: Mapping[str, Any], *, source: str = "preprocess config"
) -> Preprocess:
    """{"preset": name, **overrides} -> Preprocess; unknown keys are refused (typos must not pass)."""
    data = dict(data)
    base = Preprocess()
    preset = data.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise UsageError(
                f"{source}: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        base = PRESETS[preset]
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise UsageError(
            f"{source}: unknown key(s) {', '.join(unknown)}; known: preset, {', '.join(sorted(_FIELDS))}"
        )
    try:
        return dataclasses.replace(base, **data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"{source}: {exc}") from None


def load_preprocess(
    spec: str | os.PathLike | Mapping[str, Any] | Preprocess | None,
) -> Preprocess | None:
    """A preset name, a .json/.toml file, a dict or a Preprocess -> Preprocess (None stays None)."""
    if spec is None or isinstance(spec, Preprocess):
        return spec
    if isinstance(spec, Mapping):
        return preprocess_from_dict(spec)
    text = str(spec)
    if text in PRESETS:
        return PRESETS[text]
    path = Path(text)
    if path.suffix.lower() not in (".json", ".toml"):
        raise UsageError(
            f"--preprocess {text!r} is neither a preset ({', '.join(PRESETS)}) nor a .json/.toml config file"
        )
    if not path.is_file():
        raise UsageError(f"preprocess config {path}: no such file")
    what = f"preprocess config {path.suffix[1:].upper()}"
    if path.suffix.lower() == ".json":
        data = load_json_limited(path, limit=MAX_CONFIG_BYTES, what=what, error=UsageError)
    else:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # Python 3.10 has no tomllib; tomli is the same parser (a dependency there)
            import tomli as tomllib

        raw = read_bytes_limited(path, limit=MAX_CONFIG_BYTES, what=what, error=UsageError)
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (
            ValueError,
            RecursionError,
        ) as exc:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"preprocess config {path}: not valid TOML: {reason}") from None
    if not isinstance(data, dict):
        raise UsageError(f"preprocess config {path}: must be an object of settings")
    return preprocess_from_dict(data, source=f"preprocess config {path}")
