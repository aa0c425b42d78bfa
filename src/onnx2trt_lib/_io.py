"""File I/O shared by every command: atomic writes and safe ONNX loading/saving.

Every file the library writes goes through `atomic_write` (temp file in the target's
folder, fsync, rename), so an interrupted run never leaves a half-written artifact.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import signal
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._lazy import lazy_module
from .errors import ModelLoadError, Onnx2TrtError

# imported on first use: inspect CACHE and an engine-cache hit need neither (see _lazy)
if TYPE_CHECKING:  # type checkers see the modules; at run time they load on first use
    import numpy as np
    import onnx
else:
    np = lazy_module("numpy")
    onnx = lazy_module("onnx")

# protobuf cannot serialise a single message over 2 GiB: beyond this, weights go to external data.
_PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_DATA_THRESHOLD = 1024  # bytes; tensors smaller than this stay inline


class OutputError(Onnx2TrtError):
    """An output path that cannot be written (missing folder, same as input, read-only)."""


def check_output_path(
    out: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = ()
) -> Path:
    """Validate an output path before doing slow work, so a bad path fails in a second."""
    out_path = Path(out)
    if out_path.is_dir():
        raise OutputError(f"output {out_path} is a directory; give a file path")
    if (
        out_path.exists() and not out_path.is_file()
    ):  # /dev/null, a FIFO, a socket: a rename would replace it
        raise OutputError(f"output {out_path} exists and is not a regular file; give a file path")
    parent = out_path.parent if str(out_path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable")
    for inp in inputs:
        with contextlib.suppress(OSError):
            if Path(inp).resolve() == out_path.resolve():
                raise OutputError(
                    f"output {out_path} is the same file as input {inp}; inputs are never overwritten"
                )
    return out_path


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C while a temp file is created and recorded for cleanup.

    Without this a SIGINT landing between mkstemp() and the cleanup handler leaks the temp
    file. The Python-level handler is swapped (not the thread's signal mask: another
    thread, e.g. a BLAS pool, may receive the signal); a held Ctrl-C is re-raised when the
    block ends, as the usual KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`.

    On any exception (KeyboardInterrupt included) the temp file is removed and `path` is
    left as it was.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.exists() and not target.is_file() and not target.is_symlink():
        raise OutputError(f"cannot write {target}: it exists and is not a regular file")
    tmp: Path | None = None
    try:
        with _sigint_deferred():
            try:
                fd, tmp_name = tempfile.mkstemp(
                    prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=parent
                )
            except OSError as exc:
                raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
            tmp = Path(tmp_name)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        tmp = None
        _fsync_folder(parent)
        _sweep_stale_temps(target)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise


STALE_TEMP_SECONDS = 600


def _sweep_stale_temps(target: Path) -> None:
    """Remove temp files of `target` left by writers that were killed (SIGKILL skips cleanup).

    Only files named by our pattern whose writer process is gone here and that have not changed
    for STALE_TEMP_SECONDS: a live writer (this host, or another one on a shared disk, which
    keeps touching its file) is never disturbed.
    """
    prefix = f".{target.name}."
    now = time.time()
    with contextlib.suppress(OSError):
        for candidate in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
            pid_text = candidate.name[len(prefix) :].split(".", 1)[0]
            if not pid_text.isdigit():
                continue
            with contextlib.suppress(OSError):
                if now - candidate.stat().st_mtime < STALE_TEMP_SECONDS or _process_alive(
                    int(pid_text)
                ):
                    continue
                candidate.unlink()


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: never sweep
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return (
            pid > 0
        )  # exists under another user (or an impossible pid: treat as alive, keep the file)
    return True


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some filesystems refuse directory fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def read_bytes_limited(
    path: str | os.PathLike,
    *,
    limit: int,
    what: str = "file",
    error: type[Onnx2TrtError] = Onnx2TrtError,
) -> bytes:
    """Read a small input file whole, refusing one over `limit` bytes before reading it.

    Caches and sidecars are a few KiB to a few MiB; a huge or endless one (a FIFO, /dev/zero,
    a hostile file) must fail with a one-line `error`, not exhaust memory.
    """
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(
            f"{path}: {what} is larger than {limit} bytes; refusing to read it (is this the right file?)"
        )
    return data


def load_json_limited(
    path: str | os.PathLike,
    *,
    limit: int,
    what: str = "JSON file",
    error: type[Onnx2TrtError] = Onnx2TrtError,
) -> Any:
    """Parse a small JSON file (sidecar, ranges) with a size cap; every failure is one `error` line.

    Besides a huge file, this covers what json.loads lets escape: invalid UTF-8 and deep
    nesting (`[[[[...`), which raises RecursionError rather than a ValueError.
    """
    try:
        data = read_bytes_limited(path, limit=limit, what=what, error=error)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: {what} is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise error(f"{path}: {what} is nested too deep to be a file this library wrote") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise error(f"{path}: {what} is not usable JSON ({_first_line(exc)})") from None


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def load_arrays(
    path: str | os.PathLike, *, what: str = "array file", error: type[Onnx2TrtError] = Onnx2TrtError
) -> np.ndarray | dict[str, np.ndarray]:
    """A .npy (one array) or .npz (name -> array), never unpickling, every array read inside the check.

    np.load takes any file that is neither .npy nor zip for a pickle (and its message then
    suggests allow_pickle=True), and .npz members load lazily: both are handled here so the
    caller gets one `error` line naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    if not magic.startswith((_NPY_MAGIC, _ZIP_MAGIC)):
        raise error(
            f"{what} {path}: not a readable .npz (or .npy) file: no zip or numpy header; save with np.savez/np.save"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        reason = (
            "holds Python objects (pickles), which are never loaded"
            if "allow_pickle" in str(exc)
            else _first_line(exc)
        )
        raise error(f"{what} {path}: not a readable .npz (or .npy) file: {reason}") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_model(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def sha256_model_file(path: str | os.PathLike) -> str:
    """sha256 of an .onnx file's bytes, combined with its external-data files' (they hold the weights).

    Read from the proto without loading the weights; the key of the engine and calibration caches.
    """
    path = Path(path)
    data = (
        path.read_bytes()
    )  # an .onnx file is < 2 GiB (protobuf's limit); weights beyond go external
    digest = hashlib.sha256(data).hexdigest()
    externals = external_data_files(path)
    if not externals:
        return digest
    combined = hashlib.sha256(digest.encode())
    for ext in externals:
        combined.update(f"{ext.name}:{sha256_file(ext)}".encode())
    return combined.hexdigest()


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The existing external-data files an .onnx file references (none when it cannot be parsed).

    The proto is parsed only when its bytes mention "location" at all: a self-contained model
    (weights inline, up to 2 GiB) is not parsed a second time just to learn it has none.
    """
    path = Path(path)
    if not _mentions(path, b"location"):
        return []
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - loading reports an unreadable model properly
        return []
    names = set()
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and isinstance(entry.value, str):
                    names.add(entry.value)
    files = [path.parent / name for name in sorted(names)]
    return [f for f in files if f.is_file()]


def _check_external_data_locations(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data locations that escape the model's folder (CVE-2024-27318/27319 class)."""
    base = base_dir.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        if not isinstance(tensor.name, str):  # proto2 hands back bytes for invalid UTF-8
            raise ModelLoadError(
                f"external tensor name {tensor.name!r} is not valid UTF-8; the file is corrupt"
            )
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if location is None:
            raise ModelLoadError(f"tensor {tensor.name!r} has external data without a location")
        if (
            not isinstance(location, str) or "\0" in location
        ):  # proto2 hands back bytes for invalid UTF-8
            raise ModelLoadError(
                f"tensor {tensor.name!r}: external data location {location!r} is not a valid file name"
            )
        loc_path = Path(location)
        resolved = (base / loc_path).resolve()
        if loc_path.is_absolute() or not resolved.is_relative_to(base):
            raise ModelLoadError(
                f"tensor {tensor.name!r}: external data location {location!r} escapes the model folder; refused"
            )
        if not resolved.is_file():
            raise ModelLoadError(
                f"tensor {tensor.name!r}: external data file {location!r} not found beside the model"
            )


def load_model(
    path_or_model: str | os.PathLike | onnx.ModelProto, *, check: bool = True
) -> onnx.ModelProto:
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
        size = path.stat().st_size
        if size > _PROTOBUF_LIMIT:  # protobuf cannot parse it; do not read gigabytes to find out
            raise ModelLoadError(
                f"{path}: {size} bytes is over protobuf's 2 GiB limit, so not an ONNX file; "
                "large models keep their weights in external data files"
            )
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError, RuntimeError, etc.
            raise ModelLoadError(
                f"{path}: not a readable ONNX model ({type(exc).__name__})"
            ) from None
        if not model.graph.node and not model.graph.input and not model.graph.output:
            raise ModelLoadError(f"{path}: not an ONNX model (empty graph after parsing)")
        try:
            _check_external_data_locations(model, path.parent)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc}") from None
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise ModelLoadError(
                f"{path}: cannot load external data ({_first_line(exc)})"
            ) from None
    if check:
        try:
            onnx.checker.check_model(model, full_check=False)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
            raise ModelLoadError(f"{source}: fails the ONNX checker: {first}") from None
        except ValueError as exc:  # >2GB models: checker wants a path
            if "2GB" not in str(exc) and "2 GB" not in str(exc):
                raise ModelLoadError(
                    f"{source}: fails the ONNX checker: {_first_line(exc)}"
                ) from None
    return model


def _mentions(path: Path, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether the file's bytes contain `needle` (read in chunks, not all at once)."""
    tail = b""
    try:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                if needle in tail + block[: len(needle) - 1] or needle in block:
                    return True
                tail = block[-(len(needle) - 1) :]
    except OSError:
        return False
    return False


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters with "...", for paths quoted in one-line errors."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def model_byte_size(model: onnx.ModelProto) -> int:
    return model.ByteSize()


def save_model(
    model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None
) -> None:
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
            onnx.external_data_helper.set_external_data(
                tensor, location=data_name, offset=offset, length=len(raw)
            )
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += len(raw)
    write_bytes_atomic(target, model.SerializeToString(deterministic=True))


def _value_field(tensor: onnx.TensorProto) -> str:
    for field in (
        "float_data",
        "int32_data",
        "int64_data",
        "double_data",
        "uint64_data",
        "string_data",
    ):
        if len(getattr(tensor, field)):
            return field
    return "raw_data"


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy
