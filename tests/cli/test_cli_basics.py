"""Every subcommand's --help works, and nothing heavy is imported by the package or the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from onnx2trt_lib.cli.main import SUBCOMMANDS, cli

HEAVY = ("tensorrt", "tensorrt_rtx", "cuda", "numba", "onnxruntime", "torch", "matplotlib")

_BLOCKER = """
import builtins, sys
heavy = {heavy!r}
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name.split('.')[0] in heavy:
        raise ImportError('blocked for test: ' + name)
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
"""


def test_top_level_help_lists_every_subcommand() -> None:
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in out.output


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help_without_optional_dependencies(name: str) -> None:
    """Runs `onnx2trt NAME --help` in a fresh interpreter where heavy imports fail."""
    code = _BLOCKER.format(heavy=HEAVY) + (
        f"from onnx2trt_lib.cli.main import cli\ncli(['{name}', '--help'], standalone_mode=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage:" in proc.stdout


def test_package_import_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, onnx2trt_lib, onnx2trt_lib.passes, onnx2trt_lib.cli.main\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_quiet_commands_print_nothing_but_keep_their_exit_codes(tmp_path) -> None:
    from importlib import resources

    sample = resources.files("onnx2trt_lib") / "data" / "sample" / "digits.onnx"
    runner = CliRunner()
    lint = runner.invoke(cli, ["lint", str(sample), "--target", "tensorrt-7.1", "--quiet"])
    assert lint.exit_code == 3 and lint.output == ""
    out = tmp_path / "fp16.onnx"
    fp16 = runner.invoke(cli, ["fp16", str(sample), "-o", str(out), "--keep-io-types", "--quiet"])
    assert fp16.exit_code == 0 and fp16.output == "" and out.is_file()
    import numpy as np

    feed = tmp_path / "x.npz"
    np.savez(feed, image=np.zeros((2, 1, 8, 8), np.float32))
    run = runner.invoke(cli, ["run", str(sample), "--input", str(feed), "-n", "2", "--quiet"])
    assert run.exit_code == 0 and run.output == ""
    same = runner.invoke(
        cli, ["compare", str(sample), str(sample), "--input", str(feed), "--quiet"]
    )
    assert same.exit_code == 0 and same.output == ""
    differ = runner.invoke(
        cli,
        [
            "compare",
            str(out),
            str(sample),
            "--input",
            str(feed),
            "--atol",
            "0",
            "--rtol",
            "0",
            "--quiet",
        ],
    )
    assert differ.exit_code == 3 and differ.output == ""  # fp16 vs fp32 at zero tolerance
