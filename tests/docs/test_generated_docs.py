"""docs/cli.md, docs/api.md and the pass pages' graph fragments equal what their generators write.

When one fails, the code changed and the page did not: run the generator the message names
(`python tools/gen_cli_reference.py`, `tools/gen_api_reference.py`, `tools/gen_pass_fragments.py`).
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> ModuleType:
    path = ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_docs_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_same(page: Path, expected: str, command: str) -> None:
    current = page.read_text(encoding="utf-8") if page.exists() else ""
    if current != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    current.splitlines(True), expected.splitlines(True), str(page), "generated", n=1
                )
            )[:60]
        )
        pytest.fail(f"{page.relative_to(ROOT)} is out of date: run `{command}`\n{diff}")


def test_cli_reference_matches_help() -> None:
    # A fresh interpreter: click caches each command's help option on first use, so a test that
    # ran a subcommand outside the `onnx2trt` group would change what --help shows here.
    import subprocess
    import sys

    tool = _tool("gen_cli_reference")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('gen', {str(tool.__file__)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "sys.stdout.write(mod.render())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_same(tool.OUTPUT, proc.stdout, "python tools/gen_cli_reference.py")


def test_cli_reference_covers_every_registered_command() -> None:
    from onnx2trt_lib.cli.main import SUBCOMMANDS

    text = _tool("gen_cli_reference").render()
    for name in SUBCOMMANDS:
        assert f"## onnx2trt {name}\n" in text
        assert f"Usage: onnx2trt {name} [OPTIONS]" in text


def test_api_reference_matches_docstrings() -> None:
    tool = _tool("gen_api_reference")
    _assert_same(tool.OUTPUT, tool.render(), "python tools/gen_api_reference.py")


def test_api_reference_lists_public_names() -> None:
    import onnx2trt_lib.calib
    import onnx2trt_lib.plots

    text = _tool("gen_api_reference").render()
    for name in onnx2trt_lib.calib.__all__:
        assert f"### `{name}" in text
    assert "onnx2trt_lib.plots.plot_histogram(hist" in text
    assert " at 0x" not in text  # no memory addresses: the page must be reproducible


def test_pass_fragments_match_the_passes() -> None:
    tool = _tool("gen_pass_fragments")
    for name in tool.EXAMPLES:
        page = tool.PAGES / f"{name}.md"
        current = page.read_text(encoding="utf-8")
        _assert_same(
            page,
            tool.update_page(current, tool.render(name), page),
            "python tools/gen_pass_fragments.py",
        )


def test_fragment_printer_shows_real_graph() -> None:
    """The printer itself: constants inline, attributes, types when asked."""
    tool = _tool("gen_pass_fragments")
    model = tool.resize_static()
    lines = tool.node_lines(model, types=True)
    assert lines[0] == "input  x: float32[1x3x4x4]"
    assert (
        lines[1] == "y: float32[1x3x8x8] = Resize(x: float32[1x3x4x4], '', [1 1 2 2])  "
        "coordinate_transformation_mode=align_corners mode=linear"
    )
    assert lines[-1] == "output y: float32[1x3x8x8]"
