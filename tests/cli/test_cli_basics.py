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
        "from onnx2trt_lib.cli.main import cli\n"
        f"cli(['{name}', '--help'], standalone_mode=True)\n"
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
