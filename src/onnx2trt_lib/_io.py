"""File I/O shared by every command: atomic writes and safe ONNX loading/saving.

Every file the library writes goes through `atomic_write` (temp file in the target's
folder, fsync, rename), so an interrupted run never leaves a half-written artifact.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import hashlib
import json
import logging
import os
import signal
import socket
import stat
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
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

log = logging.getLogger(__name__)

# protobuf cannot serialise a single message over 2 GiB: beyond this, weights go to external data.
_PROTOBUF_LIMIT = 2**31 - 1
PROTOBUF_LIMIT = _PROTOBUF_LIMIT
_EXTERNAL_DATA_THRESHOLD = 1024  # bytes; tensors smaller than this stay inline


class OutputError(Onnx2TrtError):
    """An output path that cannot be written (missing folder, same as input, read-only)."""


def check_output_path(
    out: str | os.PathLike,
    *,
    inputs: tuple[str | os.PathLike, ...] = (),
    outputs: tuple[str | os.PathLike | None, ...] = (),
) -> Path:
    """The output gate every command passes before slow work, so a bad path fails in a second.

    Refused: a folder, a device/FIFO, a missing or read-only folder, any of `inputs` (also
    through a symlink or hard link), an external-data file of an input model (writing it would
    replace the model's weights), and any of `outputs` (the command's other outputs). The
    `.data` file `save_model` may write beside `out` is held to the same rule.
    """
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
    _sweep_stale_temps(out_path)  # temps of killed runs go now, even if this run is a cache hit
    written = (out_path, out_path.with_name(out_path.name + ".data"))
    for inp in inputs:
        for read, role in _read_files(Path(inp)):
            for target in written:
                if not _same_file(target, read):
                    continue
                what = f"input {inp}" + ("" if role is None else f"'s external data ({read})")
                if target == out_path:
                    raise OutputError(
                        f"output {out_path} is the same file as {what}; inputs are never overwritten"
                    )
                raise OutputError(
                    f"output {out_path} would write its external data to {target}, the same file "
                    f"as {what}; inputs are never overwritten"
                )
    for other in outputs:
        if other is not None and _same_file(out_path, Path(other)):
            raise OutputError(
                f"output {out_path} and output {other} are the same file; give different paths"
            )
    return out_path


def check_output_folder(folder: str | os.PathLike) -> Path:
    """A folder outputs go into (e.g. --plots): writable if it exists, else creatable; checked
    before slow work so a read-only folder fails in a second, not after calibrating."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path} exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent if str(probe.parent) else Path(".")
        if probe == probe.parent and not probe.exists():
            break
    if not probe.is_dir():
        raise OutputError(f"output folder {path} cannot be made: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path} is not writable ({probe})")
    return path


def _read_files(inp: Path) -> list[tuple[Path, str | None]]:
    """An input and, for a model file, the external-data files it reads (role "external")."""
    files: list[tuple[Path, str | None]] = [(inp, None)]
    with contextlib.suppress(OSError):
        if inp.is_file() and inp.stat().st_size <= _PROTOBUF_LIMIT:
            files += [(ext, "external") for ext in external_data_files(inp)]
    return files


def _same_file(a: Path, b: Path) -> bool:
    """Same path after resolving symlinks, or the same inode (a hard link)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a temp file is created and recorded for cleanup, and while
    an output set is renamed into place (so an interrupt never publishes half a set).

    The Python-level handlers are swapped (not the thread's signal mask: another thread, e.g.
    a BLAS pool, may receive the signal); a held signal is re-delivered to the previous handler
    when the block ends (KeyboardInterrupt for the default SIGINT handler).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda number, _frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for number in dict.fromkeys(held):
            signum = signal.Signals(number)
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif signum == signal.SIGINT and handler == signal.SIG_DFL:
                raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


@contextlib.contextmanager
def _folder_lock(folder: Path, *, shared: bool = False) -> Iterator[None]:
    """flock on the folder itself (no lock file left behind): publishers take it exclusive while
    they rename a set, readers of a set (a cache hit) shared, so neither sees half of another's
    set. Best effort where flock is missing (Windows) or refused (some network file systems)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def folder_lock(path: str | os.PathLike, *, shared: bool = True) -> Any:
    """The lock `output_set` publishes under, for the folder holding `path` (readers: shared)."""
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    recover_output_sets(parent)
    return _folder_lock(parent, shared=shared)


class _OutputSet:
    """Temp files waiting to be renamed over their targets together (see `output_set`)."""

    def __init__(self) -> None:
        self.pending: dict[Path, Path] = {}  # target -> temp

    def add(self, target: Path, tmp: Path) -> None:
        old = self.pending.pop(target, None)
        if old is not None:  # written twice in one set: the last one counts
            with contextlib.suppress(OSError):
                old.unlink()
        self.pending[target] = tmp

    def discard(self) -> None:
        for tmp in self.pending.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.pending.clear()

    def commit(self) -> list[Path]:
        """Rename every temp over its target. With two or more targets a journal listing the
        renames is written first (in each folder of the set) and removed after them: a
        SIGKILL between two renames leaves the journal, and the next process that touches
        the folder (`recover_output_sets`) finishes the renames, so the set is whole."""
        targets = list(self.pending)
        folders = sorted({t.parent if str(t.parent) else Path(".") for t in targets})
        journals: list[Path] = []
        with contextlib.ExitStack() as stack:
            for folder in folders:  # sorted: two publishers never wait on each other in a cycle
                stack.enter_context(_folder_lock(folder))
            stack.enter_context(_signals_deferred())
            for folder in folders:  # a killed publisher's set first, so ours lands on a whole one
                _recover_sets(folder)
            if len(targets) > 1:
                journals = _write_journals(folders, [(self.pending[t], t) for t in targets])
            for target in targets:
                os.replace(self.pending[target], target)
                del self.pending[target]
            for folder in folders:
                _fsync_folder(folder)
            for journal in journals:
                with contextlib.suppress(OSError):
                    journal.unlink()
        return targets


_JOURNAL = ".onnx2trt-set."  # + <host>~<pid>.<random>.journal (".part" while it is written)
_JOURNAL_LIMIT = 1 << 20  # bytes; a set's journal lists a few paths


def _write_journals(folders: list[Path], renames: list[tuple[Path, Path]]) -> list[Path]:
    """One journal per folder of the set, each listing every rename (temp -> target, absolute)
    and every journal: complete on disk (fsync, rename, folder fsync) before the first rename."""
    token = os.urandom(6).hex()
    journals = [
        folder / f"{_JOURNAL}{_host_tag()}~{os.getpid()}.{token}.journal" for folder in folders
    ]
    document = json.dumps(
        {
            "renames": [[str(tmp.absolute()), str(target.absolute())] for tmp, target in renames],
            "journals": [str(j.absolute()) for j in journals],
        }
    ).encode()
    for journal in journals:
        part = journal.with_name(journal.name + ".part")
        with open(part, "wb") as handle:
            handle.write(document)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, journal)
        _fsync_folder(journal.parent)
    return journals


def _journal_writer(name: str) -> tuple[str, int] | None:
    """(host, pid) from a journal's name, or None when the name is not a journal's."""
    writer = name[len(_JOURNAL) :].split(".", 1)[0]
    host, _, pid_text = writer.rpartition("~")
    return (host, int(pid_text)) if pid_text.isdigit() else None


def _writer_gone(host: str, pid: int, path: Path) -> bool:
    """Whether the process that wrote `path` is dead (this host), or long gone (another host)."""
    if host == _host_tag():
        return not _process_alive(pid)
    try:
        return time.time() - path.stat().st_mtime >= STALE_TEMP_SECONDS
    except OSError:
        return False


def _recover_sets(folder: Path) -> int:
    """Finish the output sets that publishers killed mid-rename left in `folder` (the caller
    holds the folder's lock); returns how many. A journal is complete before its first
    rename, and each temp it names was complete (fsynced) before the journal was written,
    so finishing the renames always yields the whole new set. Only temps named as this
    library names them, beside their own target, are renamed: a planted journal can do no
    more than the folder's writer already could."""
    recovered = 0
    with contextlib.suppress(OSError):
        for journal in sorted(folder.glob(f"{glob.escape(_JOURNAL)}*.journal*")):
            writer = _journal_writer(journal.name)
            if writer is None or not _writer_gone(*writer, journal):
                continue
            if journal.name.endswith(".part"):  # killed before the journal was whole: no rename ran
                with contextlib.suppress(OSError):
                    journal.unlink()
                continue
            host, pid = writer
            if journal.is_symlink() or not journal.is_file():  # a FIFO would hang the read
                continue
            try:
                if journal.stat().st_size > _JOURNAL_LIMIT:
                    raise ValueError("not a journal this library wrote")
                document = json.loads(journal.read_bytes())
                renames = [(Path(a), Path(b)) for a, b in document["renames"]]
                copies = [Path(j) for j in document["journals"]]
            except (OSError, ValueError, TypeError, KeyError):
                renames, copies = [], [journal]
            for tmp, target in renames:
                prefix = f".{target.name}.{host}~{pid}."
                if tmp.parent != target.parent or not (
                    tmp.name.startswith(prefix) and tmp.name.endswith(".tmp")
                ):
                    continue
                with contextlib.suppress(OSError):
                    if tmp.is_file() and not tmp.is_symlink():
                        os.replace(tmp, target)
            for parent in {t.parent for _, t in renames}:
                _fsync_folder(parent)
            for copy in {journal, *copies}:  # only this writer's journals
                if copy.name.endswith(".journal") and _journal_writer(copy.name) == writer:
                    with contextlib.suppress(OSError):
                        copy.unlink()
            recovered += 1
            log.info("finished the output set a killed run left in %s", folder)
    return recovered


def recover_output_sets(path: str | os.PathLike) -> int:
    """Finish any output set a killed run left half-renamed in `path`'s folder (or `path`,
    a folder): every reader and writer of outputs calls this first, so each sees the
    previous set or the new one. Returns how many sets were finished."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    folder = folder if str(folder) else Path(".")
    if not any(folder.glob(f"{glob.escape(_JOURNAL)}*")):
        return 0
    with _folder_lock(folder), _signals_deferred():
        return _recover_sets(folder)


_OUTPUT_SET: contextvars.ContextVar[_OutputSet | None] = contextvars.ContextVar(
    "onnx2trt_output_set", default=None
)


@contextlib.contextmanager
def output_set() -> Iterator[None]:
    """Publish every file written inside the block as one set: all or none.

    Each `atomic_write` (and so `save_model`, caches, sidecars, plots) writes its temp file and
    waits; when the block ends without an exception the temps are renamed over their targets
    under an exclusive lock of their folders, with Ctrl-C/SIGTERM held, so a reader that takes
    the shared lock (`folder_lock`) sees the previous set or the new one, never a mixture. On
    any exception (an interrupt included) every temp is removed and the previous outputs stay.
    Sets nest: an inner block joins the outer one.
    """
    if _OUTPUT_SET.get() is not None:
        yield
        return
    pending = _OutputSet()
    token = _OUTPUT_SET.set(pending)
    try:
        yield
    except BaseException:
        pending.discard()
        raise
    finally:
        _OUTPUT_SET.reset(token)
    try:
        targets = pending.commit()
    except BaseException as exc:
        pending.discard()
        if isinstance(exc, OSError):
            raise OutputError(f"cannot publish outputs: {exc.strerror or exc}") from None
        raise
    for target in targets:
        _sweep_stale_temps(target)


@contextlib.contextmanager
def published_now() -> Iterator[None]:
    """Files written inside are renamed into place at once, outside any enclosing `output_set`:
    for checkpoints, which a later run resumes from even when this one fails."""
    token = _OUTPUT_SET.set(None)
    try:
        yield
    finally:
        _OUTPUT_SET.reset(token)


def written_path(path: str | os.PathLike) -> Path:
    """Where the bytes this run wrote for `path` are now: its pending temp inside an
    `output_set`, else the path itself. Hash this, not the target, to record what *we* wrote
    (another run may replace the target before our set is published)."""
    pending = _OUTPUT_SET.get()
    if pending is not None and Path(path) in pending.pending:
        return pending.pending[Path(path)]
    return Path(path)


def _temp_prefix(target: Path) -> str:
    """`.<name>.<host>~<pid>.`: the next run on this host can tell a dead writer's temp at once."""
    return f".{target.name}.{_host_tag()}~{os.getpid()}."


def _host_tag() -> str:
    return "".join(c for c in socket.gethostname() if c.isalnum() or c in "-_")[:32] or "host"


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
    pending = _OUTPUT_SET.get()
    tmp: Path | None = None
    try:
        with _signals_deferred():
            try:
                fd, tmp_name = tempfile.mkstemp(
                    prefix=_temp_prefix(target), suffix=".tmp", dir=parent
                )
            except OSError as exc:
                raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
            tmp = Path(tmp_name)
            if pending is not None:  # the set removes it if anything fails before the commit
                pending.add(target, tmp)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        if pending is not None:
            tmp = None  # renamed (or removed) with the whole set
            return
        with _folder_lock(parent), _signals_deferred():
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

    A temp named by this host (`.<name>.<host>~<pid>.*.tmp`) whose process is gone goes at
    once, so the next run (any command writing `target`, a cache hit included) cleans up.
    Temps of other hosts on a shared disk (and the older `.<name>.<pid>.*.tmp` names) go only
    when unchanged for STALE_TEMP_SECONDS and their pid is not alive here.
    """
    recover_output_sets(target.parent)  # a journal's temps are the new set: rename, not remove
    prefix = f".{target.name}."
    now = time.time()
    here = _host_tag()
    with contextlib.suppress(OSError):
        for candidate in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
            writer = candidate.name[len(prefix) :].split(".", 1)[0]
            host, _, pid_text = writer.rpartition("~")
            if not pid_text.isdigit():
                continue
            with contextlib.suppress(OSError):
                if _process_alive(int(pid_text)):
                    continue
                if host != here and now - candidate.stat().st_mtime < STALE_TEMP_SECONDS:
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


def write_files_atomic(files: Mapping[Path, bytes]) -> None:
    """Write several files as a set (`output_set`): all renamed into place together, or none.

    An error before the renames (a full disk, an interrupt) leaves every target as it was and
    no temp file behind.
    """
    with output_set():
        for path, data in files.items():
            write_bytes_atomic(path, data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------- the resource guard for reads


def check_regular_file(
    path: str | os.PathLike, *, what: str = "file", error: type[Onnx2TrtError] = Onnx2TrtError
) -> Path:
    """Refuse anything but a regular file (after symlinks) before opening it: a FIFO would block
    forever and a device (/dev/zero) never ends. A missing path passes (the caller says so)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return path
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        raise error(
            f"{path}: is not a regular file (a FIFO, socket or device); give a regular file"
        )
    return path


def memory_limit() -> int:
    """The most bytes one array or read may take: half the physical memory (the documented
    resource limit; the other half is left for the model, ONNX Runtime and the system)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        total = 16 * 2**30
    return max(total // 2, 2**30)


def check_allocation(
    shape: Any,
    dtype: Any,
    *,
    what: str,
    error: type[Onnx2TrtError] = Onnx2TrtError,
    copies: int = 1,
) -> int:
    """Bytes `copies` arrays of `shape` and `dtype` take, refused over `memory_limit()` before
    anything is allocated (a declared shape of 1e5 x 1e5 x 100 is 7 TiB)."""
    count = 1
    for dim in shape:
        count *= max(int(dim), 0)
    nbytes = count * np.dtype(dtype).itemsize * copies
    limit = memory_limit()
    if nbytes > limit:
        dims = "x".join(str(int(d)) for d in shape) or "scalar"
        raise error(
            f"{what} of shape {dims} ({np.dtype(dtype).name}) needs {_gib(nbytes)}, over the "
            f"{_gib(limit)} limit (half the memory here); use smaller shapes"
        )
    return nbytes


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.1f} MiB"


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
    check_regular_file(path, what=what, error=error)
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
    check_regular_file(path, what=what, error=error)
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
    if magic.startswith(_ZIP_MAGIC):
        _check_npz_sizes(path, what=what, error=error)
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


def _check_npz_sizes(path: Path, *, what: str, error: type[Onnx2TrtError]) -> None:
    """A zip bomb (31 MB of .npz declaring 32 GB) is refused from the sizes its directory
    declares, before any member is inflated; zipfile never inflates past a declared size."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise error(
            f"{what} {path}: not a readable .npz (or .npy) file: {_first_line(exc)}"
        ) from None
    limit = memory_limit()
    if declared > limit:
        raise error(
            f"{what} {path}: its arrays declare {_gib(declared)}, over the {_gib(limit)} limit "
            "(half the memory here); is this the right file?"
        )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    check_regular_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_model(model: onnx.ModelProto) -> str:
    """sha256 of the serialised model; past 2 GiB (which protobuf cannot serialise) of the
    skeleton followed by each large tensor's bytes."""
    from ._weights import copy_without_weights, is_large, stub

    if not is_large(model):
        return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    weights = hashlib.sha256()

    def hashed(tensor: onnx.TensorProto) -> onnx.TensorProto:
        weights.update(tensor.SerializeToString(deterministic=True))
        return stub(tensor)

    skeleton = copy_without_weights(model, replace=hashed)
    digest = hashlib.sha256(skeleton.SerializeToString(deterministic=True))
    digest.update(weights.digest())
    return digest.hexdigest()


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
    for tensor in external_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location" and isinstance(entry.value, str):
                names.add(entry.value)
    files = [path.parent / name for name in sorted(names)]
    return [f for f in files if f.is_file()]


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto a model holds: initializers, sparse initializers (values and indices),
    node attributes (dense and sparse), in the main graph, every If/Loop/Scan body and every
    model-local function, at any depth.

    onnx's own walker (`external_data_helper._get_all_tensors`) skips sparse tensors, so their
    external locations were neither checked nor loaded, and ONNX Runtime, given the model as
    bytes, resolved them against the current directory.
    """
    graphs: list[Any] = [model.graph]
    bodies: list[Any] = list(model.functions)  # functions: nodes only
    while graphs or bodies:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            nodes = graph.node
        else:
            nodes = bodies.pop().node
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                sparse_attrs = (
                    [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
                ) + list(attr.sparse_tensors)
                for sparse in sparse_attrs:
                    yield sparse.values
                    yield sparse.indices
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The tensors of `all_tensors` whose data lives in an external file."""
    return [
        t
        for t in all_tensors(model)
        if t.data_location == onnx.TensorProto.EXTERNAL
        or any(e.key == "location" for e in t.external_data)
    ]


def _check_external_data_locations(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data locations that escape the model's folder (CVE-2024-27318/27319 class)."""
    base = base_dir.resolve()
    for tensor in external_tensors(model):
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
        entries = {e.key: e.value for e in tensor.external_data}
        offset, length = entries.get("offset", "0"), entries.get("length")
        if not (isinstance(offset, str) and offset.isdigit()) or not (
            length is None or (isinstance(length, str) and length.isdigit())
        ):
            raise ModelLoadError(
                f"tensor {tensor.name!r}: external data offset {offset!r} or length {length!r} "
                "is not a byte count"
            )
        size = resolved.stat().st_size
        if length is not None and int(offset) + int(length) > size:
            # checked here for every reader: TensorRT and ONNX Runtime read files themselves
            raise ModelLoadError(
                f"tensor {tensor.name!r}: external data (offset {offset}, {length} bytes) runs "
                f"past the end of {location!r} ({size} bytes); the data file is truncated or not "
                "this model's"
            )


def load_external_data(model: onnx.ModelProto, base_dir: str | os.PathLike) -> None:
    """Read every external tensor of `all_tensors` into the proto (checked first: no escapes).

    Afterwards nothing in `model` points at a file, so ONNX Runtime or TensorRT given its bytes
    resolve nothing against the current directory.
    """
    _check_external_data_locations(model, Path(base_dir))
    for tensor in external_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(base_dir))
        else:  # stray external_data entries on an inline tensor: nothing may read them
            del tensor.external_data[:]


def load_model_without_weights(path: str | os.PathLike) -> onnx.ModelProto:
    """The gate of `load_model` without reading external data: the proto as stored, every
    external location checked (inside the model's folder, an existing file). For deciding
    how to hand a large model on (its path to ONNX Runtime or TensorRT) without 2 GiB in memory."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
    check_regular_file(path, what="ONNX file", error=ModelLoadError)
    size = path.stat().st_size
    if size > _PROTOBUF_LIMIT:  # protobuf cannot parse it; do not read gigabytes to find out
        raise ModelLoadError(
            f"{path}: {size} bytes is over protobuf's 2 GiB limit, so not an ONNX file; "
            "large models keep their weights in external data files"
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, RuntimeError, etc.
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.input and not model.graph.output:
        raise ModelLoadError(f"{path}: not an ONNX model (empty graph after parsing)")
    try:
        _check_external_data_locations(model, path.parent)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
    return model


def external_bytes(model: onnx.ModelProto) -> int:
    """Bytes a model's external tensors declare (their `length`, else dims x element size)."""
    total = 0
    for tensor in external_tensors(model):
        length = next((e.value for e in tensor.external_data if e.key == "length"), None)
        if isinstance(length, str) and length.isdigit():
            total += int(length)
            continue
        count = 1
        for dim in tensor.dims:
            count *= max(int(dim), 0)
        try:
            total += count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            total += count
    return total


def load_model(
    path_or_model: str | os.PathLike | onnx.ModelProto, *, check: bool = True
) -> onnx.ModelProto:
    """Load an ONNX model (external data included) or pass a ModelProto through.

    Raises ModelLoadError with a one-line reason for a missing, non-ONNX, truncated,
    unsafe or checker-failing model. A model past protobuf's 2 GiB (external weights) is
    checked from its file, as onnx's checker requires.
    """
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
        source = "model"
        if external_tensors(model):
            raise ModelLoadError(
                "model: an in-memory ModelProto still references external data files, which would "
                "be looked up in the current directory; pass the model's path (or onnx.load it from its folder)"
            )
    else:
        path = Path(path_or_model)
        source = str(path)
        model = load_model_without_weights(path)
        from ._weights import LARGE_MODEL, tensor_bytes

        large = external_bytes(model) + tensor_bytes(model) >= LARGE_MODEL
        if check and large:  # onnx's checker serialises a proto: past 2 GiB only a file works
            _check(str(path), source)
            check = False
        try:
            load_external_data(model, path.parent)
        except Exception as exc:
            raise ModelLoadError(
                f"{path}: cannot load external data ({_first_line(exc)})"
            ) from None
    if check:
        from ._weights import is_large

        if not is_large(model):  # an in-memory model past 2 GiB cannot be checked: no file
            _check(model, source)
    return model


def check_model_file(path: str | os.PathLike) -> None:
    """onnx's checker on a model file (any size: onnx reads the file itself), as a one-line
    ModelLoadError; the file should have passed `load_model_without_weights`."""
    _check(str(path), str(path))


def _check(model: onnx.ModelProto | str, source: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ModelLoadError(f"{source}: fails the ONNX checker: {first}") from None
    except ValueError as exc:
        raise ModelLoadError(f"{source}: fails the ONNX checker: {_first_line(exc)}") from None


@contextlib.contextmanager
def ort_source(model: onnx.ModelProto) -> Iterator[bytes | str]:
    """What to hand `onnxruntime.InferenceSession` for a loaded model: its bytes, or beyond
    protobuf's 2 GiB a path in a private temp folder holding the model with its weights external.

    Never a model with relative external locations given as bytes: ONNX Runtime would resolve
    them against the current directory.
    """
    if external_tensors(model):
        raise ModelLoadError(
            "model still references external data files; load it with load_model(path) first"
        )
    from ._weights import is_large

    if not is_large(model):
        yield model.SerializeToString()
        return
    with tempfile.TemporaryDirectory(prefix="onnx2trt-ort-") as folder:
        path = Path(folder) / "model.onnx"
        with published_now():  # a scratch file ORT reads now, never part of a command's outputs
            save_model(model, path, external_data=True)
        yield str(path)


def _mentions(path: Path, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether the file's bytes contain `needle` (read in chunks, not all at once)."""
    if not path.is_file():  # a FIFO or device: never read
        return False
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
    """Size of `model`'s tensors (ByteSize() of the whole would serialise it: fails past 2 GiB)."""
    from ._weights import tensor_bytes

    return tensor_bytes(model)


def save_model(
    model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None
) -> None:
    """Write `model` atomically; models over protobuf's 2 GiB limit get one external-data file.

    `external_data=None` decides by size. The data file is written first (atomically), the
    .onnx last, so a reader never sees a model pointing at missing data; inside an
    `output_set` both are published together. The caller's model keeps its inline weights,
    and they are not copied: each is written straight from the caller's proto.
    """
    from ._weights import copy_without_weights, is_large

    target = Path(path)
    if external_data is None:
        external_data = is_large(model)
    if not external_data:
        write_bytes_atomic(target, model.SerializeToString(deterministic=True))
        return
    if external_tensors(model):
        raise OutputError("model still references unloaded external data; load it first")
    data_name = target.name + ".data"
    data_path = target.parent / data_name
    with output_set():  # model and data file: published together
        with atomic_write(data_path, "wb") as data_handle:
            offset = 0

            def external(tensor: onnx.TensorProto) -> onnx.TensorProto:
                nonlocal offset
                out = onnx.TensorProto()
                out.name = tensor.name
                out.dims.extend(tensor.dims)
                out.data_type = tensor.data_type
                if tensor.doc_string:
                    out.doc_string = tensor.doc_string
                raw = (
                    tensor.raw_data
                    if tensor.HasField("raw_data")
                    else onnx.numpy_helper.to_array(tensor).tobytes()
                )
                pad = (-offset) % 4096
                data_handle.write(b"\0" * pad)
                offset += pad
                data_handle.write(raw)
                for key, value in (
                    ("location", data_name),
                    ("offset", offset),
                    ("length", len(raw)),
                ):
                    entry = out.external_data.add()
                    entry.key, entry.value = key, str(value)
                out.data_location = onnx.TensorProto.EXTERNAL
                offset += len(raw)
                return out

            skeleton = copy_without_weights(model, _EXTERNAL_DATA_THRESHOLD, external)
        write_bytes_atomic(target, skeleton.SerializeToString(deterministic=True))
