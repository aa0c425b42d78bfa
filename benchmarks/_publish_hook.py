"""Run the onnx2trt CLI with pauses at the points of publishing an output set (kill campaign).

`python benchmarks/_publish_hook.py ARGS...` runs `onnx2trt ARGS...`; with O2T_HOOK_OUTPUTS
(comma-separated output names) and O2T_HOOK_MARKS (a folder) set, it creates an empty file
in O2T_HOOK_MARKS and sleeps O2T_HOOK_PAUSE seconds (default 0.3) at each of these points:

- `write-<i>`: the i-th temp file of an output is written and about to be fsynced;
- `before-<i>` / `after-<i>`: just before / after the i-th rename of an output into place.

The campaign waits for one mark and sends its signal then, so the signal lands in the last
write or between two renames of one set, a window of microseconds without the pause.
"""

from __future__ import annotations

import os
import runpy
import time
from pathlib import Path

OUTPUTS = {n for n in os.environ.get("O2T_HOOK_OUTPUTS", "").split(",") if n}
MARKS = Path(os.environ.get("O2T_HOOK_MARKS", "."))
PAUSE = float(os.environ.get("O2T_HOOK_PAUSE", "0.3"))
_counts = {"write": 0, "rename": 0}


def _mark(name: str) -> None:
    (MARKS / name).touch()
    time.sleep(PAUSE)


def _is_output(path: str | os.PathLike) -> bool:
    return Path(path).name in OUTPUTS


def _temp_of_output(name: str) -> bool:
    return name.endswith(".tmp") and any(name.startswith(f".{o}.") for o in OUTPUTS)


_replace, _fsync = os.replace, os.fsync


def replace(src, dst, *args, **kwargs):
    if not _is_output(dst):
        return _replace(src, dst, *args, **kwargs)
    i = _counts["rename"]
    _counts["rename"] += 1
    _mark(f"before-{i}")
    result = _replace(src, dst, *args, **kwargs)
    _mark(f"after-{i}")
    return result


def fsync(fd):
    try:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
    except OSError:
        name = ""
    if _temp_of_output(name):
        i = _counts["write"]
        _counts["write"] += 1
        _mark(f"write-{i}")
    return _fsync(fd)


if OUTPUTS:
    os.replace, os.fsync = replace, fsync
runpy.run_module("onnx2trt_lib.cli.main", run_name="__main__", alter_sys=True)
