"""Calibration data sources: image lists, folders, globs, .npy/.npz tensors, Python iterables.

Every source yields batches as `{input_name: ndarray}` and says whether it can be read
twice (`rereadable`: a generator cannot, so it is not hashed) and, where it can be
known without reading the data twice, a content fingerprint for the cache sidecar.

    list.txt      one image path a line; relative paths are resolved against the list's folder
    folder/       every image below it, recursively, sorted
    'imgs/*.jpg'  a glob (quote it in a shell)
    data.npy      ready samples for a one-input model, shape (N, ...)
    data.npz      ready samples per input name, each (N, ...)
"""

from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
import importlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._io import check_allocation, load_arrays, read_bytes_limited, shorten
from ..errors import CalibrationError, UsageError
from .preprocess import Preprocess

log = logging.getLogger(__name__)
_NOTED_EXTRAS: dict[str, list[list[str]]] = {}  # origin -> extra arrays already noted (once each)

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
    }
)
# Pillow formats a calibration image may be, whatever its name says. Pillow's open() tries every
# registered plugin otherwise: an EPS named cat.png would run Ghostscript on its PostScript
# (https://pillow.readthedocs.io/en/stable/reference/Image.html#PIL.Image.open, `formats`).
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP", "PPM", "GIF")
# Decoded size refused before decoding: a few hundred KiB of PNG can declare gigapixels.
MAX_IMAGE_PIXELS = 50_000_000
MAX_LIST_BYTES = 64 * 2**20  # an image list of ~1 million paths
_IMAGE_PLUGINS = (
    "PngImagePlugin",
    "JpegImagePlugin",
    "MpoImagePlugin",
    "BmpImagePlugin",
    "TiffImagePlugin",
    "WebPImagePlugin",
    "PpmImagePlugin",
    "GifImagePlugin",
)
_GLOB_CHARS = re.compile(r"[*?\[]")
Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- shapes


def parse_shapes(
    spec: str | Iterable[str] | Mapping[str, Sequence[int]] | None,
) -> dict[str, tuple[int, ...]]:
    """Shapes as trtexec ('x:1x3x640x640,mask:1x640') or Polygraphy ('x:[1,3,640,640]') write
    them, or several such strings -> {name: dims}; parsed by build.config, as every command does.

    A name may itself contain ':'; the dims are after the last one. As in trtexec, a name may be
    wrapped in quotes ('input:0':1x3x224x224); they are not part of it.
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {str(k): tuple(int(d) for d in v) for k, v in spec.items()}
    from ..build.config import parse_shapes as parse_entries  # the one shape parser

    items = [spec] if isinstance(spec, str) else list(spec)
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        if not item.strip():
            continue
        for name, values in parse_entries(item).items():
            if not values or min(values) <= 0:
                raise UsageError(
                    f"--shapes {item!r}: every dim of {name!r} must be a positive integer"
                )
            if name in shapes and shapes[name] != values:
                raise UsageError(f"--shapes gives input {name!r} twice with different dims")
            shapes[name] = values
    return shapes


def format_shape(dims: Sequence[Any]) -> str:
    return "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in dims)


@dataclass(frozen=True)
class InputSpec:
    """A model input as calibration sees it: name, dims (None where dynamic), numpy dtype."""

    name: str
    dims: tuple[int | None, ...]
    dtype: np.dtype

    @property
    def is_float(self) -> bool:
        return np.issubdtype(self.dtype, np.floating)


def resolve_calibration_shapes(
    inputs: Sequence[InputSpec], shapes: Mapping[str, Sequence[int]], batch_size: int | None
) -> dict[str, tuple[int, ...]]:
    """The fixed shape each input is calibrated at, or an error saying which --shape is missing.

    A dynamic batch dimension alone is filled with `batch_size`; any other dynamic dim needs
    --shape. `batch_size` replaces the first dim of a given --shape when the model allows it.
    """
    names = {spec.name for spec in inputs}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise UsageError(
            f"--shape names {', '.join(unknown)} but the model inputs are {', '.join(sorted(names))}"
        )
    resolved: dict[str, tuple[int, ...]] = {}
    for spec in inputs:
        given = shapes.get(spec.name)
        dims: tuple[int | None, ...]
        if given is not None:
            dims = tuple(int(d) for d in given)
            if len(dims) != len(spec.dims):
                raise UsageError(
                    f"--shape {spec.name}:{format_shape(dims)} has {len(dims)} dims but the model input is "
                    f"{format_shape(spec.dims)} ({len(spec.dims)} dims)"
                )
            if batch_size is not None and dims and spec.dims and spec.dims[0] is None:
                dims = (batch_size, *dims[1:])
        else:
            dims = tuple(spec.dims)
            if dims and dims[0] is None:
                dims = (batch_size or 1, *dims[1:])
            if any(d is None for d in dims):
                example = "x".join(str(d) if d is not None else "640" for d in dims)
                raise UsageError(
                    f"model input {spec.name!r} has dynamic shape {format_shape(spec.dims)}: "
                    f"give a calibration shape, e.g. --shape {spec.name}:{example}"
                )
        if (
            batch_size is not None
            and spec.dims
            and spec.dims[0] is not None
            and spec.dims[0] != batch_size
        ):
            raise UsageError(
                f"model input {spec.name!r} has a fixed batch of {spec.dims[0]} ({format_shape(spec.dims)}); "
                f"--batch-size {batch_size} cannot be used: drop it or export the model with a dynamic batch"
            )
        for axis, (want, got) in enumerate(zip(spec.dims, dims, strict=True)):
            if want is not None and want != got:
                raise UsageError(
                    f"input {spec.name!r}: calibration shape {format_shape(dims)} differs from the model's "
                    f"{format_shape(spec.dims)} at axis {axis}"
                )
        fixed = tuple(d for d in dims if d is not None)
        assert len(fixed) == len(dims)  # dynamic dims were filled or refused above
        resolved[spec.name] = fixed
    return resolved


# ----------------------------------------------------------------------------- sources


class CalibrationSource(Protocol):
    """What the collector needs from a data source."""

    rereadable: bool

    def batches(self, shapes: Mapping[str, tuple[int, ...]]) -> Iterator[Batch]: ...

    def fingerprint(self) -> str | None: ...

    def describe(self) -> str: ...

    def num_batches(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None: ...


class ImageSource:
    """Image files decoded with Pillow and preprocessed into one model input."""

    rereadable = True

    def __init__(
        self, paths: Sequence[Path], *, origin: str, preprocess: Preprocess | None = None
    ) -> None:
        if not paths:
            raise CalibrationError(
                f"{origin}: no images found; give a list, folder or glob with at least one image"
            )
        self.paths = list(paths)
        self.origin = origin
        self.preprocess = preprocess or Preprocess()
        self._fingerprint: str | None = None
        check_images(self.paths, origin=origin)

    def describe(self) -> str:
        return f"{len(self.paths)} images from {self.origin}"

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256(b"images\n")
            for path in self.paths:
                digest.update(_sha256_path(path).encode() + b"\n")
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _target(self, shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, int, Preprocess]:
        if len(shapes) != 1:
            raise UsageError(
                f"images feed exactly one input but the model has {len(shapes)} ({', '.join(shapes)}); "
                "give the data as .npz with one array per input"
            )
        name, dims = next(iter(shapes.items()))
        pre = self.preprocess
        if len(dims) != 4:
            raise CalibrationError(
                f"images need a 4-D input (N,C,H,W or N,H,W,C) but {name!r} is {format_shape(dims)}"
            )
        channels, size = (
            (dims[1], (dims[2], dims[3])) if pre.layout == "NCHW" else (dims[3], (dims[1], dims[2]))
        )
        if channels != pre.channels:
            raise CalibrationError(
                f"input {name!r} ({format_shape(dims)}, {pre.layout}) wants {channels} channels but preprocessing "
                f"gives {pre.channels} (color {pre.color}); set color to {'GRAY' if channels == 1 else 'RGB or BGR'}"
                f" or check the layout"
            )
        if pre.size is not None and tuple(pre.size) != size:
            raise CalibrationError(
                f"input {name!r} is {format_shape(dims)} but preprocess size is {pre.size[0]}x{pre.size[1]}; "
                "make --shape and the preprocess size agree"
            )
        # a batch as float32, plus a resized RGB float copy of each image: refused before decoding
        check_allocation(dims, np.float32, what=f"input {name!r}", error=CalibrationError, copies=3)
        if size[0] * size[1] > MAX_IMAGE_PIXELS:
            raise CalibrationError(
                f"input {name!r} ({format_shape(dims)}) asks for {size[0]}x{size[1]} images, over the "
                f"{MAX_IMAGE_PIXELS} pixel limit for a calibration image; use smaller --shape sizes"
            )
        return name, dims[0], pre.with_size(size)

    def num_batches(self, shapes: Mapping[str, tuple[int, ...]], *, tail: bool = False) -> int:
        _, batch, _ = self._target(shapes)
        return -(-len(self.paths) // batch) if tail else len(self.paths) // batch

    def batches(
        self, shapes: Mapping[str, tuple[int, ...]], *, tail: bool = False
    ) -> Iterator[Batch]:
        """Batches of the shape's batch size; `tail` (a dynamic batch dim): a short last batch
        instead of dropping the images that do not fill one."""
        name, batch, pre = self._target(shapes)
        if len(self.paths) < batch and not tail:
            raise CalibrationError(
                f"{self.origin}: {len(self.paths)} images are fewer than one batch of {batch}"
            )
        dropped = 0 if tail else len(self.paths) % batch
        if dropped:
            log.warning(
                "%s: the last %d image(s) do not fill a batch of %d and are not used",
                self.origin,
                dropped,
                batch,
            )
        for start in range(0, len(self.paths) - dropped, batch):
            samples = [pre.apply(load_image(path)) for path in self.paths[start : start + batch]]
            yield {name: np.stack(samples)}


class ArraySource:
    """Ready tensors: {input name: array of samples along axis 0}, re-batched to the calibration batch."""

    rereadable = True

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray] | np.ndarray,
        *,
        origin: str,
        digest: str | None = None,
    ) -> None:
        for name, arr in ({"": arrays} if isinstance(arrays, np.ndarray) else arrays).items():
            if np.ndim(arr) == 0:
                label = f"array {name!r}" if name else "the array"
                raise CalibrationError(
                    f"{origin}: {label} is a single number; calibration arrays are (samples, ...)"
                )
        self.arrays = arrays
        self.origin = origin
        self._digest = digest

    def describe(self) -> str:
        return f"tensors from {self.origin}"

    def fingerprint(self) -> str:
        if self._digest is None:
            digest = hashlib.sha256(b"arrays\n")
            items = {"": self.arrays} if isinstance(self.arrays, np.ndarray) else self.arrays
            for key in sorted(items):
                arr = np.ascontiguousarray(items[key])
                digest.update(f"{key}|{arr.dtype.str}|{arr.shape}\n".encode())
                digest.update(arr.tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    def _named(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        if isinstance(self.arrays, np.ndarray):
            if len(shapes) != 1:
                raise UsageError(
                    f"{self.origin} holds one array but the model has inputs {', '.join(shapes)}; use .npz named by input"
                )
            return {next(iter(shapes)): self.arrays}
        arrays = dict(self.arrays)
        missing = sorted(set(shapes) - set(arrays))
        if missing:
            raise CalibrationError(
                f"{self.origin} has no array for model input(s) {', '.join(missing)}; it has {', '.join(sorted(arrays))}"
            )
        extra = sorted(set(arrays) - set(shapes))
        if (
            extra
        ):  # labels beside the inputs (as quantize takes them): inputs by name, note the rest
            if extra not in _NOTED_EXTRAS.setdefault(str(self.origin), []):
                _NOTED_EXTRAS[str(self.origin)].append(extra)
                log.warning(
                    "%s: array(s) %s are not model inputs (%s) and are ignored",
                    self.origin,
                    ", ".join(extra),
                    ", ".join(shapes),
                )
            arrays = {name: arrays[name] for name in shapes}
        counts = {len(a) for a in arrays.values()}
        if len(counts) != 1:
            raise CalibrationError(
                f"{self.origin}: arrays hold different sample counts {sorted(counts)}"
            )
        return arrays

    def num_batches(self, shapes: Mapping[str, tuple[int, ...]], *, tail: bool = False) -> int:
        arrays = self._named(shapes)
        batch = next(iter(shapes.values()))[0]
        total = len(next(iter(arrays.values())))
        return -(-total // batch) if tail else total // batch

    def batches(
        self, shapes: Mapping[str, tuple[int, ...]], *, tail: bool = False
    ) -> Iterator[Batch]:
        """Slices of the shape's batch size; `tail`: a short last one instead of dropping it."""
        arrays = self._named(shapes)
        total = len(next(iter(arrays.values())))
        batch = next(iter(shapes.values()))[0]
        if total == 0 or (total < batch and not tail):
            raise CalibrationError(
                f"{self.origin}: {total} samples are fewer than one batch of {batch}"
            )
        for name, arr in arrays.items():
            if tuple(arr.shape[1:]) != tuple(shapes[name][1:]):
                raise CalibrationError(
                    f"{self.origin}: samples for input {name!r} are {format_shape(arr.shape[1:])} but the input "
                    f"wants {format_shape(shapes[name][1:])} per sample"
                )
        dropped = 0 if tail else total % batch
        if dropped:
            log.warning(
                "%s: the last %d sample(s) do not fill a batch of %d and are not used",
                self.origin,
                dropped,
                batch,
            )
        for start in range(0, total - dropped, batch):
            yield {name: np.asarray(arr[start : start + batch]) for name, arr in arrays.items()}


class IterableSource:
    """Batches given by the caller as {input name: ndarray}; re-readable unless it is an iterator."""

    def __init__(
        self, iterable: Iterable[Mapping[str, np.ndarray]], *, origin: str = "batches"
    ) -> None:
        self.iterable = iterable
        self.origin = origin
        self.rereadable = (
            iter(iterable) is not iterable
        )  # a list/Sequence can be read again; a generator cannot
        self._digest: str | None = None

    def describe(self) -> str:
        return f"{self.origin} ({'re-readable' if self.rereadable else 'one pass'})"

    def fingerprint(self) -> str | None:
        if not self.rereadable:
            return None  # reading it to hash it would consume it
        if self._digest is None:
            digest = hashlib.sha256(b"batches\n")
            for index, batch in enumerate(self.iterable):
                _check_batch(batch, index, self.origin)
                for key in sorted(batch):
                    arr = np.ascontiguousarray(batch[key])
                    digest.update(f"{key}|{arr.dtype.str}|{arr.shape}\n".encode())
                    digest.update(arr.tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    def num_batches(self, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        return len(self.iterable) if isinstance(self.iterable, Sequence) else None

    def batches(self, shapes: Mapping[str, tuple[int, ...]]) -> Iterator[Batch]:
        for index, batch in enumerate(self.iterable):
            _check_batch(batch, index, self.origin)
            yield {str(k): np.asarray(v) for k, v in batch.items()}


def subsample(source: Any, count: int, *, seed: int = 0) -> Any:
    """`count` samples of an image or array source, drawn without replacement by a seeded
    generator: the same subset on every run and machine (kept in data order)."""
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise UsageError(f"max samples {count!r} must be a positive integer")
    if isinstance(source, ImageSource):
        total = len(source.paths)
    elif isinstance(source, ArraySource):
        arrays = source.arrays if isinstance(source.arrays, Mapping) else {"": source.arrays}
        total = min(len(a) for a in arrays.values())
    else:
        raise UsageError(
            f"--max-samples needs an image list, folder or glob, or arrays; {source.describe()} is not"
        )
    if count >= total:
        return source
    keep = np.sort(np.random.default_rng(seed).choice(total, size=int(count), replace=False))
    origin = f"{source.origin} ({count} of {total} samples, seed {seed})"
    if isinstance(source, ImageSource):
        picked = ImageSource.__new__(ImageSource)  # the full list was checked when it was opened
        picked.paths = [source.paths[i] for i in keep]
        picked.origin, picked.preprocess, picked._fingerprint = origin, source.preprocess, None
        return picked
    if isinstance(source.arrays, Mapping):
        return ArraySource(
            {k: np.asarray(v)[keep] for k, v in source.arrays.items()}, origin=origin
        )
    return ArraySource(np.asarray(source.arrays)[keep], origin=origin)


def _check_batch(batch: Any, index: int, origin: str) -> None:
    if not isinstance(batch, Mapping):
        raise CalibrationError(
            f"{origin}: item {index} is {type(batch).__name__}, not a dict of input name -> array"
        )


# ----------------------------------------------------------------------------- opening


def open_source(
    data: Any, *, preprocess: Preprocess | None = None
) -> ImageSource | ArraySource | IterableSource:
    """Anything `calibrate(data=...)` accepts -> a source (see the module docstring)."""
    if isinstance(data, (ImageSource, ArraySource, IterableSource)):
        return data
    if isinstance(data, (str, os.PathLike)):
        return _open_path(str(data), preprocess)
    if isinstance(data, np.ndarray):
        return ArraySource(data, origin="array")
    if isinstance(data, Mapping):
        return ArraySource({str(k): np.asarray(v) for k, v in data.items()}, origin="arrays")
    if isinstance(data, Iterable):
        return IterableSource(data)
    raise UsageError(
        f"calibration data of type {type(data).__name__} is not a path, array, dict or iterable of dicts"
    )


def _open_path(text: str, preprocess: Preprocess | None) -> ImageSource | ArraySource:
    if not text.strip():
        raise CalibrationError(
            "calibration data path is empty; give an image list, folder, glob or .npy/.npz"
        )
    try:
        return _open_existing_path(text, preprocess)
    except OSError as exc:  # e.g. a name too long for the file system
        raise CalibrationError(f"calibration data {shorten(text)}: {exc.strerror or exc}") from None


def _open_existing_path(text: str, preprocess: Preprocess | None) -> ImageSource | ArraySource:
    path = Path(text)
    if path.is_dir():
        return ImageSource(_images_below(path), origin=f"folder {path}", preprocess=preprocess)
    if not path.exists():
        if _GLOB_CHARS.search(text):
            files = sorted(Path(p) for p in globlib.glob(text, recursive=True) if Path(p).is_file())
            return ImageSource(files, origin=f"glob {text!r}", preprocess=preprocess)
        raise CalibrationError(f"calibration data {path}: no such file, folder or glob match")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _open_arrays(path)
    if suffix in IMAGE_SUFFIXES:
        return ImageSource([path], origin=str(path), preprocess=preprocess)
    return ImageSource(read_image_list(path), origin=f"list {path}", preprocess=preprocess)


def _images_below(folder: Path) -> list[Path]:
    """Image files under `folder`, sorted; symlinked subfolders are followed (data sets are often
    links to another disk), each real folder once, so a link cycle ends."""
    seen: set[str] = set()
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        files += [
            Path(root) / n
            for n in names
            if Path(n).suffix.lower() in IMAGE_SUFFIXES and (Path(root) / n).is_file()
        ]
    return sorted(files)


def _open_arrays(path: Path) -> ArraySource:
    loaded = load_arrays(path, what="calibration data", error=CalibrationError)
    digest = _sha256_path(path)
    arrays = {"": loaded} if isinstance(loaded, np.ndarray) else loaded
    if not arrays:
        raise CalibrationError(f"{path}: holds no arrays")
    return ArraySource(loaded, origin=str(path), digest=digest)


def read_image_list(path: Path) -> list[Path]:
    """Lines of a text file -> paths; blank lines and '#' comments skipped; relative to the list's folder."""
    raw = read_bytes_limited(path, limit=MAX_LIST_BYTES, what="image list", error=CalibrationError)
    if b"\0" in raw:
        raise CalibrationError(
            f"{path}: not a text list of image paths (and not .npy/.npz or an image by its suffix)"
        )
    # -sig: a byte-order mark is not part of the first path; surrogateescape: a file name that is not
    # UTF-8 (as `ls` writes it) stays the same bytes, as os.walk and glob give it
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    base = path.parent
    paths = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        candidate = Path(entry).expanduser()
        paths.append(candidate if candidate.is_absolute() else base / candidate)
    if not paths:
        raise CalibrationError(f"{path}: the image list is empty; put one image path per line")
    return paths


def check_images(paths: Sequence[Path], *, origin: str) -> None:
    """Open every image's header (cheap) and report ALL missing or unreadable ones in one error."""
    from .._optional import require

    require("PIL.Image", purpose="reading calibration images")
    bad: list[str] = []
    for path in paths:
        if not path.is_file():
            bad.append(f"{path} (missing)")
            continue
        try:
            with open_image(path):
                pass  # the header parse and the format/size checks are the check
        except CalibrationError as exc:
            bad.append(f"{path} ({str(exc).split(': ', 1)[-1]})")
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
            bad.append(f"{path} ({type(exc).__name__})")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CalibrationError(
            f"{origin}: {len(bad)} of {len(paths)} images cannot be read: {shown}; fix or remove them"
        )


def open_image(path: Path) -> Any:
    """Pillow's open() limited to IMAGE_FORMATS and MAX_IMAGE_PIXELS (header only, nothing decoded).

    Only regular files: a FIFO or device named like an image would block or never end.
    """
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise CalibrationError(f"{path}: not a regular file")
    for plugin in _IMAGE_PLUGINS:  # registers only the allowed formats' openers
        with contextlib.suppress(ImportError):
            importlib.import_module(f"PIL.{plugin}")
    formats = [f for f in IMAGE_FORMATS if f in Image.OPEN]
    try:
        img = Image.open(path, formats=formats)
    except UnidentifiedImageError:
        raise CalibrationError(
            f"{path}: not an image in an allowed format ({', '.join(IMAGE_FORMATS)})"
        ) from None
    except Image.DecompressionBombError:
        raise CalibrationError(
            f"{path}: declares more pixels than the {MAX_IMAGE_PIXELS} pixel limit for a calibration image"
        ) from None
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        img.close()
        raise CalibrationError(
            f"{path}: {width}x{height} pixels is over the {MAX_IMAGE_PIXELS} pixel limit for a calibration image"
        )
    return img


def load_image(path: Path) -> Any:
    """Decode fully (so truncated files fail here, naming the path)."""
    from PIL import ImageOps

    try:
        with open_image(path) as img:
            img.load()
            # upright as a viewer (and OpenCV's imread) shows it: cameras store rotation in EXIF
            img = ImageOps.exif_transpose(img)
            return (
                img
                if img.mode != "P"
                else img.convert("RGBA" if "transparency" in img.info else "RGB")
            )
    except CalibrationError:
        raise
    except Exception as exc:
        raise CalibrationError(
            f"{path}: cannot decode image ({type(exc).__name__}: {exc}); fix or remove it"
        ) from None


def data_fingerprint(data: str | os.PathLike) -> str:
    """sha256 of calibration data by content, as `calibrate` reads it: an image list, folder or
    glob hashes every image's bytes (not the list's or the folder's listing), so changing an
    image changes the key of the engine built from it."""
    text = os.fspath(data)
    path = Path(text)
    if path.is_file() and (
        path.suffix.lower() in (".npy", ".npz") or path.suffix.lower() in IMAGE_SUFFIXES
    ):
        return _sha256_path(path)
    if path.is_dir():
        files = _images_below(path)
    elif path.is_file():
        files = read_image_list(path)
    elif _GLOB_CHARS.search(text):
        files = sorted(Path(p) for p in globlib.glob(text, recursive=True) if Path(p).is_file())
    else:
        raise CalibrationError(f"calibration data {path}: no such file, folder or glob match")
    digest = hashlib.sha256(b"images\n")
    for file in files:
        if not file.is_file():
            raise CalibrationError(f"calibration data {path}: image {file} is missing")
        digest.update(_sha256_path(file).encode() + b"\n")
    return "images:" + digest.hexdigest()


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
