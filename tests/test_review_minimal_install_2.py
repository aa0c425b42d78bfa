"""Review: the package with a dependency missing fails with one line naming what to install."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata, resources

import pytest
from click.testing import CliRunner

from onnx2trt_lib import _optional
from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.errors import MissingDependencyError

SAMPLE = resources.files("onnx2trt_lib") / "data" / "sample"

# makes `import numba` fail as it does when numba is not installed
_BLOCK_NUMBA = """
import builtins
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name.split('.')[0] == 'numba':
        raise ModuleNotFoundError("No module named 'numba'", name='numba')
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
from onnx2trt_lib.cli.main import cli
import sys
cli(sys.argv[1:], prog_name='onnx2trt')
"""


def test_cli_without_numba_says_what_to_install_without_traceback(tmp_path) -> None:
    cache = tmp_path / "digits.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\nimage: 3c010204\nlogits: 3eaf6a6c\n")
    # reading a cache needs no numba (calib exports its kernels lazily)
    shown = subprocess.run(
        [sys.executable, "-c", _BLOCK_NUMBA, "inspect", str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and "logits" in shown.stdout, shown.stderr[-2000:]
    # calibrating does
    args = ["calibrate", str(SAMPLE / "digits.onnx"), "--data", str(SAMPLE / "calib_list.txt")]
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCK_NUMBA, *args, "-o", str(tmp_path / "c.cache")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "pip install 'numba'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_calibrate_plots_without_matplotlib_fails_before_calibrating(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "digits.cache"
    result = CliRunner().invoke(
        cli,
        [
            "calibrate",
            str(SAMPLE / "digits.onnx"),
            "--data",
            str(SAMPLE / "calib_list.txt"),
            "--preprocess",
            str(SAMPLE / "preprocess.json"),
            "-o",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "onnx2trt_lib[plots]" in result.output
    assert not out.exists()  # no minutes of calibration before telling the user
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("module", sorted(_optional._EXTRAS))
def test_missing_dependency_message_names_only_extras_that_exist(module, monkeypatch) -> None:
    extras = set(metadata.metadata("onnx2trt_lib").get_all("Provides-Extra") or [])
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError) as info:
        _optional.require(module)
    message = str(info.value)
    if "onnx2trt_lib[" in message:
        named = message.split("onnx2trt_lib[", 1)[1].split("]", 1)[0]
        assert named in extras, f"{message!r} names extra {named!r}; pyproject has {sorted(extras)}"
    else:
        assert "base dependency" in message
