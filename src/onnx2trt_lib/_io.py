"""File I/O shared by every command: atomic writes and safe ONNX loading/saving.

Every file the library writes goes through `atomic_write` (temp file in the target's
folder, fsync, rename), so an interrupted run never leaves a half-written artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import onnx

from .errors import ModelLoadError, Onnx2TrtError

# protobuf cannot serialise a single message over 2 GiB: beyond this, weights go to external data.
_PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_DATA_THRESHOLD = 1024  # bytes; tensors smaller than this stay inline


class OutputError(Onnx2TrtError):
    """An output path that cannot be written (missing folder, same as input, read-only)."""


def check_output_path(out: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Validate an output path before doing slow work, so a bad path fails in a second."""
    out_path = Path(out)
    if out_path.is_dir():
        raise OutputError(f"output {out_path} is a directory; give a file path")
    parent = out_path.parent if str(out_path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable")
    for inp in inputs:
        with contextlib.suppress(OSError):
            if Path(inp).resolve() == out_path.resolve():
                raise OutputError(f"output {out_path} is the same file as input {inp}; inputs are never overwritten")
    return out_path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`.

    On any exception (KeyboardInterrupt included) the temp file is removed and `path` is
    left as it was.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_model(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def _check_external_data_locations(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data locations that escape the model's folder (CVE-2024-27318/27319 class)."""
    base = base_dir.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location is None:
            raise ModelLoadError(f"tensor {tensor.name!r} has external data without a location")
        loc_path = Path(location)
        resolved = (base / loc_path).resolve()
        if loc_path.is_absolute() or not resolved.is_relative_to(base):
            raise ModelLoadError(
                f"tensor {tensor.name!r}: external data location {location!r} escapes the model folder; refused"
            )
        if not resolved.is_file():
            raise ModelLoadError(f"tensor {tensor.name!r}: external data file {location!r} not found beside the model")


def load_model(path_or_model: str | os.PathLike | onnx.ModelProto, *, check: bool = True) -> onnx.ModelProto:
    """Load an ONNX model (external data included) or pass a ModelProto through.

    Raises ModelLoadError with a one-line reason for a missing, non-ONNX, truncated,
    unsafe or checker-failing model.
    """
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
        source = "model"
    else:
        path = Path(path_or_model)
        source = str(path)
        if not path.exists():
            raise ModelLoadError(f"{path}: no such file")
        if path.is_dir():
            raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError, RuntimeError, etc.
            raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
        if not model.graph.node and not model.graph.input and not model.graph.output:
            raise ModelLoadError(f"{path}: not an ONNX model (empty graph after parsing)")
        _check_external_data_locations(model, path.parent)
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise ModelLoadError(f"{path}: cannot load external data ({exc})") from None
    if check:
        try:
            onnx.checker.check_model(model, full_check=False)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
            raise ModelLoadError(f"{source}: fails the ONNX checker: {first}") from None
        except ValueError as exc:  # >2GB models: checker wants a path
            if "2GB" not in str(exc) and "2 GB" not in str(exc):
                raise ModelLoadError(f"{source}: fails the ONNX checker: {exc}") from None
    return model


def model_byte_size(model: onnx.ModelProto) -> int:
    return model.ByteSize()


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None) -> None:
    """Write `model` atomically; models over protobuf's 2 GiB limit get one external-data file.

    `external_data=None` decides by size. The data file is written first (atomically), the
    .onnx last, so a reader never sees a model pointing at missing data.
    """
    target = Path(path)
    if external_data is None:
        external_data = model.ByteSize() >= _PROTOBUF_LIMIT
    if not external_data:
        write_bytes_atomic(target, model.SerializeToString(deterministic=True))
        return
    model = _copy(model)  # the caller's model keeps its inline weights
    data_name = target.name + ".data"
    data_path = target.parent / data_name
    with atomic_write(data_path, "wb") as data_handle:
        offset = 0
        for tensor in onnx.external_data_helper._get_all_tensors(model):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise OutputError("model still references unloaded external data; load it first")
            if not tensor.HasField("raw_data"):
                arr = onnx.numpy_helper.to_array(tensor)
                tensor.ClearField(_value_field(tensor))
                tensor.raw_data = arr.tobytes()
            raw = tensor.raw_data
            if len(raw) < _EXTERNAL_DATA_THRESHOLD:
                continue
            pad = (-offset) % 4096
            data_handle.write(b"\0" * pad)
            offset += pad
            data_handle.write(raw)
            onnx.external_data_helper.set_external_data(tensor, location=data_name, offset=offset, length=len(raw))
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += len(raw)
    write_bytes_atomic(target, model.SerializeToString(deterministic=True))


def _value_field(tensor: onnx.TensorProto) -> str:
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        if len(getattr(tensor, field)):
            return field
    return "raw_data"


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy
