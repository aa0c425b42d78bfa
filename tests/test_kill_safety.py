"""Crash safety: a run killed at any point leaves no partial or corrupt artifact.

`onnx2trt fix`, `calibrate` and `build` run in a child process on the bundled sample model
and are killed with SIGINT or SIGKILL at random points (seeded), and also right when a
temp file appears (inside the write). After each kill, every output is either absent or
complete and loadable (and equal to a clean run's where the output is deterministic);
after SIGINT no temp file is left. Finally a plain re-run in the same folder succeeds.

Also here: a static check that nothing in src/ writes files except through
`onnx2trt_lib._io` (temp file in the same folder, fsync, rename).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import dotted_name as _dotted

SRC = Path(__file__).resolve().parents[1] / "src" / "onnx2trt_lib"
SAMPLE = SRC / "data" / "sample"

# Runs the real CLI; registers a command whose module exists but which main.py does not list yet.
# With ONNX2TRT_KILLTEST_SLOW_FSYNC set, fsync sleeps first (a slow disk): the temp file then
# lives long enough for the test to see it and kill the child inside the write.
LAUNCHER = (
    "import os, sys, time\n"
    "delay = float(os.environ.get('ONNX2TRT_KILLTEST_SLOW_FSYNC') or 0)\n"
    "if delay:\n"
    "    real_fsync = os.fsync\n"
    "    def slow_fsync(fd):\n"
    "        time.sleep(delay)\n"
    "        real_fsync(fd)\n"
    "    os.fsync = slow_fsync\n"
    "from onnx2trt_lib.cli import main as m\n"
    "m.SUBCOMMANDS.setdefault(sys.argv[1], sys.argv[1] + '_cmd')\n"
    "sys.argv[0] = 'onnx2trt'\n"
    "m.main()\n"
)


def _onnx2trt(args: list[str], cwd: Path, *, slow_fsync: float = 0.0) -> subprocess.Popen:
    env = {
        **os.environ,
        "ONNX2TRT_CACHE_DIR": str(cwd / "engine_cache"),
        "PYTHONUNBUFFERED": "1",
        "ONNX2TRT_KILLTEST_SLOW_FSYNC": str(slow_fsync) if slow_fsync else "",
    }
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out + err)[-3000:]


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


def _kill(
    proc: subprocess.Popen, folder: Path, sig: int, when: float | str, stale: set[Path]
) -> str:
    """Send `sig` after `when` seconds, or ('at-tmp') as soon as a new temp file shows up in `folder`.

    `stale`: temp files an earlier SIGKILL left (nothing can remove those); they do not count.
    """
    start = time.monotonic()
    if when == "at-tmp":
        while (
            proc.poll() is None
            and not set(_temp_files(folder)) - stale
            and time.monotonic() - start < 180
        ):
            time.sleep(0.0005)
    else:
        while proc.poll() is None and time.monotonic() - start < when:
            time.sleep(0.002)
    if proc.poll() is not None:
        _finish(proc)
        return "finished before the signal"
    proc.send_signal(sig)
    try:
        code, output = _finish(proc, timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _finish(proc)
        pytest.fail(f"did not stop within 60 s of {signal.Signals(sig).name}")
    if sig == signal.SIGINT and "Traceback" in output:
        # only acceptable before the CLI runs at all (Python start-up/imports), which no program can catch
        assert ", in invoke" not in output and output.rstrip().endswith("KeyboardInterrupt"), (
            f"SIGINT inside the CLI printed a traceback:\n{output}"
        )
    # exit 0 after a late SIGINT is fine when the work was complete: the artifact checks decide
    assert code in (0, 1, 130, -signal.SIGINT) or sig == signal.SIGKILL, (
        f"exit {code} after SIGINT:\n{output}"
    )
    return f"killed after {time.monotonic() - start:.2f} s, exit {code}"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- artifact checks


def _check_fix(folder: Path, reference: dict[str, str]) -> None:
    import onnx

    out = folder / "fixed.onnx"
    if out.exists():
        onnx.checker.check_model(onnx.load(out))
        assert _sha(out) == reference["fixed.onnx"], "fixed.onnx differs from a clean run's"
    report = folder / "report.json"
    if report.exists():
        assert json.loads(report.read_text())["output"].endswith("fixed.onnx")


def _check_calibrate(folder: Path, reference: dict[str, str]) -> None:
    from onnx2trt_lib.calib.cache import read_cache
    from onnx2trt_lib.calib.sidecar import read_sidecar

    cache = folder / "digits.cache"
    if cache.exists():
        parsed = read_cache(cache)
        assert parsed.bits, "cache without tensors"
        assert _sha(cache) == reference["digits.cache"], "cache differs from a clean run's"
    side = folder / "digits.cache.calib.json"
    if side.exists():
        document = json.loads(side.read_text())  # complete JSON, not a torn write
        assert read_sidecar(cache) is not None or not cache.exists()
        if cache.exists():
            assert document["cache_sha256"] == _sha(cache), "sidecar describes another cache"
    ranges = folder / "ranges.json"
    if ranges.exists():
        assert json.loads(ranges.read_text())


def _check_engine_pair(engine: Path) -> None:
    """Engine + sidecar agree (sha256, size); an engine alone must be refused with a one-line error."""
    from onnx2trt_lib.build.engine import EngineFileError, read_sidecar, sidecar_path

    side = sidecar_path(engine)
    if engine.exists() and side.exists():
        document = read_sidecar(engine)
        data = engine.read_bytes()
        assert document["engine_sha256"] == hashlib.sha256(data).hexdigest(), (
            f"{engine.name}: sidecar/engine mismatch"
        )
        assert document["engine_size"] == len(data)
    elif engine.exists():
        with pytest.raises(EngineFileError) as info:
            read_sidecar(engine)
        assert "\n" not in str(info.value)
    elif side.exists():
        json.loads(
            side.read_text()
        )  # a sidecar alone is complete JSON; load_engine says "no such engine"


def _check_build(folder: Path, reference: dict[str, str]) -> None:
    _check_engine_pair(folder / "digits.engine")
    cache_dir = folder / "engine_cache"
    for entry in cache_dir.glob("*.engine") if cache_dir.is_dir() else []:
        _check_engine_pair(entry)


# ---------------------------------------------------------------- commands


def _pp(folder: Path) -> Path:
    path = folder / "pp.json"
    path.write_text(
        json.dumps(
            {
                "size": [8, 8],
                "color": "GRAY",
                "scale": 1 / 255,
                "mean": [0.0],
                "std": [1.0],
                "layout": "NCHW",
                "dtype": "float32",
            }
        )
    )
    return path


COMMANDS: dict[str, tuple[Callable[[Path], list[str]], list[str], Callable]] = {
    "fix": (
        lambda d: [
            "fix",
            str(SAMPLE / "digits.onnx"),
            "-o",
            "fixed.onnx",
            "--target",
            "tensorrt-8.6",
            "--report",
            "report.json",
        ],
        ["fixed.onnx"],
        _check_fix,
    ),
    "calibrate": (
        lambda d: [
            "calibrate",
            str(SAMPLE / "digits.onnx"),
            "--data",
            str(SAMPLE / "calib_images"),
            "-p",
            str(_pp(d)),
            "-o",
            "digits.cache",
            "--ranges",
            "ranges.json",
            "--quiet",
        ],
        ["digits.cache"],
        _check_calibrate,
    ),
    "build": (
        lambda d: [
            "build",
            str(SAMPLE / "digits.onnx"),
            "-o",
            "digits.engine",
            "--quiet",
            "--shapes",
            "image:1x1x8x8/4x1x8x8/8x1x8x8",
        ],
        [],
        _check_build,
    ),
}


def _needs(command: str) -> None:
    import importlib

    try:
        importlib.import_module(f"onnx2trt_lib.cli.{command}_cmd")
    except ImportError as exc:
        pytest.skip(f"onnx2trt {command} does not exist yet: {exc}")
    if command == "build":
        pytest.importorskip("tensorrt_rtx", reason="building engines needs tensorrt_rtx")


def _reference(command: str, folder: Path) -> tuple[dict[str, str], float]:
    make_args, deterministic, _ = COMMANDS[command]
    folder.mkdir()
    start = time.monotonic()
    code, output = _finish(_onnx2trt(make_args(folder), folder))
    took = time.monotonic() - start
    assert code == 0, f"clean `onnx2trt {command}` on the sample failed:\n{output}"
    return {name: _sha(folder / name) for name in deterministic}, took


def _kill_campaign(command: str, tmp_path: Path, plan: list[tuple[int, float | str]]) -> list[str]:
    _needs(command)
    make_args, _, check = COMMANDS[command]
    reference, took = _reference(command, tmp_path / "reference")
    folder = tmp_path / "killed"
    folder.mkdir()
    log = []
    for sig, when in plan:
        delay = when if isinstance(when, str) else when * took
        stale = set(_temp_files(folder))
        if (
            delay == "at-tmp"
        ):  # make sure there is something to write (no cache hit from an earlier run)
            _remove_outputs(folder, keep=stale)
        proc = _onnx2trt(make_args(folder), folder, slow_fsync=0.3 if delay == "at-tmp" else 0.0)
        note = _kill(proc, folder, sig, delay, stale)
        if delay == "at-tmp":
            assert note.startswith("killed"), f"the at-tmp kill never saw a temp file: {note}"
        log.append(
            f"{signal.Signals(sig).name} at {delay if isinstance(delay, str) else f'{delay:.2f}s'}: {note}"
        )
        check(folder, reference)
        if sig == signal.SIGINT:
            new = set(_temp_files(folder)) - stale
            assert not new, f"SIGINT left temp files: {sorted(new)}\n" + "\n".join(log)
    code, output = _finish(_onnx2trt(make_args(folder), folder))
    assert code == 0, f"re-run after kills failed:\n{output}\n" + "\n".join(log)
    check(folder, reference)
    for name, digest in reference.items():
        assert _sha(folder / name) == digest, f"re-run's {name} differs from a clean run's"
    return log


def _remove_outputs(folder: Path, keep: set[Path]) -> None:
    import shutil

    for path in sorted(folder.iterdir()):
        if path in keep or path.name == "pp.json":
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _plan(seed: int, kills: int) -> list[tuple[int, float | str]]:
    """`kills` random (signal, fraction-of-a-clean-run) points, plus one SIGKILL inside a write."""
    rng = random.Random(seed)
    plan: list[tuple[int, float | str]] = [
        (rng.choice([signal.SIGINT, signal.SIGKILL]), rng.uniform(0.3, 1.05)) for _ in range(kills)
    ]
    plan.append((signal.SIGKILL, "at-tmp"))
    plan.append((signal.SIGINT, "at-tmp"))
    return plan


@pytest.mark.parametrize("command", ["fix", "calibrate", "build"])
def test_killed_runs_leave_nothing_half_written(command: str, tmp_path: Path) -> None:
    log = _kill_campaign(command, tmp_path, _plan(seed=0, kills=2))
    assert len(log) == 4


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("command", ["fix", "calibrate", "build"])
def test_killed_runs_more_seeds(command: str, seed: int, tmp_path: Path) -> None:
    _kill_campaign(command, tmp_path, _plan(seed=seed, kills=4))


# ---------------------------------------------------------------- every write goes through _io


_WRITE_MODES = set("wax+")
_FORBIDDEN_CALLS = {
    "write_bytes",
    "write_text",
    "tofile",
    "touch",
    "mkstemp",
    "NamedTemporaryFile",
    "convert_model_to_external_data",
    "write_external_data_tensors",
}
_FORBIDDEN_DOTTED = {
    "onnx.save",
    "onnx.save_model",
    "os.rename",
    "os.replace",
    "shutil.copy",
    "shutil.copy2",
    "shutil.copyfile",
    "shutil.move",
    "os.link",
    "os.symlink",
    "os.write",
}
_HANDLE_WRITERS = {
    "np.save": 0,
    "np.savez": 0,
    "np.savez_compressed": 0,
    "numpy.save": 0,
    "numpy.savez": 0,
    "json.dump": 1,
    "pickle.dump": 1,
    "np.savetxt": 0,
}


def _atomic_handles(tree: ast.AST) -> set[str]:
    """Names bound by `with atomic_write(...) as name` anywhere in the module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if (
                    isinstance(item.context_expr, ast.Call)
                    and _dotted(item.context_expr.func).endswith("atomic_write")
                    and isinstance(item.optional_vars, ast.Name)
                ):
                    names.add(item.optional_vars.id)
    return names


def non_atomic_writes(source: str, filename: str = "<src>") -> list[str]:
    """Every way of writing a file that bypasses onnx2trt_lib._io (the library's only writer)."""
    tree = ast.parse(source, filename)
    handles = _atomic_handles(tree)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        where = f"{filename}:{node.lineno}: {name or ast.unparse(node.func)}"
        if name == "os.open":
            problems.append(f"{where}: raw os.open")
            continue
        if last == "open" and not name.startswith(
            ("np.", "numpy.", "Image.", "PIL.", "zipfile.", "tarfile.")
        ):
            # builtins open(path, mode); Path.open(mode)
            position = 1 if name in ("open", "io.open", "builtins.open", "gzip.open") else 0
            mode = (
                node.args[position]
                if len(node.args) > position
                else next((k.value for k in node.keywords if k.arg == "mode"), None)
            )
            if (
                isinstance(mode, ast.Constant)
                and isinstance(mode.value, str)
                and _WRITE_MODES & set(mode.value)
            ):
                problems.append(f"{where}(mode={mode.value!r}) writes in place")
            elif position == 1 and mode is not None and not isinstance(mode, ast.Constant):
                problems.append(f"{where} with a computed mode")
        elif last == "savefig":  # matplotlib may write only into an atomic_write handle
            target = node.args[0] if node.args else None
            if not (isinstance(target, ast.Name) and target.id in handles):
                problems.append(f"{where} writes a file directly")
        elif last in _FORBIDDEN_CALLS or name in _FORBIDDEN_DOTTED:
            problems.append(f"{where} writes a file directly")
        elif name in _HANDLE_WRITERS:
            index = _HANDLE_WRITERS[name]
            target = node.args[index] if len(node.args) > index else None
            if not (isinstance(target, ast.Name) and target.id in handles):
                problems.append(f"{where} writes to something other than an atomic_write handle")
    return problems


def test_write_detector_finds_planted_writes() -> None:
    planted = (
        "import json, numpy as np, onnx\n"
        "open(p, 'w').write(s)\n"  # 2
        "Path(p).write_bytes(b)\n"  # 3
        "np.save(p, a)\n"  # 4
        "onnx.save(m, p)\n"  # 5
        "json.dump(d, open(p, 'w'))\n"  # 6: open + dump
        "with atomic_write(p) as h:\n    np.savez(h, a=a)\n    json.dump(d, h)\n"  # fine
        "with open(p, 'rb') as f:\n    f.read()\n"  # fine
        "fig.savefig(p)\n"  # 12
    )
    found = non_atomic_writes(planted)
    lines = sorted(int(f.split(":")[1]) for f in found)
    assert lines == [2, 3, 4, 5, 6, 6, 12], found


def test_nothing_in_src_writes_files_except_through_io() -> None:
    files = [p for p in sorted(SRC.rglob("*.py")) if p.name != "_io.py"]
    assert len(files) > 20
    problems = []
    for path in files:
        problems += non_atomic_writes(path.read_text(), str(path.relative_to(SRC)))
    assert not problems, "writes that bypass onnx2trt_lib._io:\n" + "\n".join(problems)


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    """The helper itself: an exception inside the block keeps the old content and removes the temp file."""
    from onnx2trt_lib._io import atomic_write, write_bytes_atomic

    target = tmp_path / "artifact.bin"
    write_bytes_atomic(target, b"old")
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), atomic_write(target) as handle:
            handle.write(b"new, half")
            raise exc
        assert target.read_bytes() == b"old"
        assert not _temp_files(tmp_path)
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
