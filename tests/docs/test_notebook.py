"""docs/notebook.ipynb runs top to bottom in a real Jupyter kernel and shows what it promises."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

nbformat = pytest.importorskip(
    "nbformat", reason="needs nbformat, nbclient, ipykernel (test dependencies)"
)
nbclient = pytest.importorskip(
    "nbclient", reason="needs nbformat, nbclient, ipykernel (test dependencies)"
)
pytest.importorskip("ipykernel", reason="needs nbformat, nbclient, ipykernel (test dependencies)")
pytest.importorskip("matplotlib", reason="the notebook draws a histogram")
pytest.importorskip("tensorrt_rtx", reason="the notebook builds an engine with TensorRT-RTX")

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebook.ipynb"


def _outputs(cell) -> list[dict]:
    return [dict(o) for o in cell.get("outputs", [])]


def _data(cell, mime: str) -> str:
    return "".join(str(o.get("data", {}).get(mime, "")) for o in _outputs(cell))


def _text(cell) -> str:
    return "".join(str(o.get("text", "")) for o in _outputs(cell)) + _data(cell, "text/plain")


@pytest.mark.slow
def test_notebook_executes_and_shows_tables_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    committed = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.get("outputs") for cell in committed), (
        "commit the notebook with its outputs: python tools/run_notebook.py"
    )
    assert not [o for c in committed for o in _outputs(c) if o.get("output_type") == "error"]
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's scratch folder lands here
    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(tmp_path / "engine-cache"))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in _outputs(cell) if o.get("output_type") == "error"]
    assert not errors
    by_source = {cell.source.splitlines()[0]: cell for cell in code}

    lint_cell = by_source["from onnx2trt_lib import fix, lint"]
    assert "resize-scales-coordinate-mode" in _text(lint_cell)
    assert "gather-elements-unsupported" in _text(lint_cell)

    report_html = _data(
        by_source['fixed, report = fix("sample/digits.onnx", target="tensorrt-7.1")'], "text/html"
    )
    assert (
        "<table>" in report_html
        and "fix-resize" in report_html
        and "decompose-gather-elements" in report_html
    )

    calib_html = _data(by_source["from onnx2trt_lib import calibrate"], "text/html")
    assert "<b>Calibration</b>" in calib_html and "/Relu_1_output_0" in calib_html

    plot_cell = by_source["%matplotlib inline"]
    pngs = [o["data"]["image/png"] for o in _outputs(plot_cell) if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and len(pngs[0]) > 10_000  # one figure, drawn (base64 PNG)
    assert "amax = 2.998" in _text(plot_cell)  # the tensor docs/calibration.md shows

    compare_cell = by_source["def accuracy(outputs):"]
    assert "quantized tensor (worst first)" in _data(compare_cell, "text/html")
    metric = _text(compare_cell)
    assert "'candidate':" in metric and "'reference':" in metric

    fp16_cell = by_source["from onnx2trt_lib import to_fp16"]
    assert "to-fp16: converted_nodes=" in _text(fp16_cell)
    fp16_metric = ast.literal_eval(_text(fp16_cell).splitlines()[-1])  # the printed accuracies
    assert fp16_metric["reference"] > 0.95 and abs(fp16_metric["drop"]) <= 0.005

    build_cell = by_source["from onnx2trt_lib import build"]
    build_text = _text(build_cell)
    assert "digits_int8.engine: " in build_text and "tensorrt-rtx" in build_text
    assert "served from the engine cache: True" in build_text

    inspect_cell = by_source["from onnx2trt_lib import inspect"]
    shown = _text(inspect_cell)
    assert "input  image  float32  ?x1x8x8" in shown and "output logits  float32  ?x10" in shown
    assert "profile 0: image:1x1x8x8/8x1x8x8/32x1x8x8" in shown

    scratch = [p for p in tmp_path.iterdir() if p.name.startswith("onnx2trt-notebook-")]
    assert (
        len(scratch) == 1
        and (scratch[0] / "digits.cache").is_file()
        and (scratch[0] / "digits_int8.onnx").is_file()
        and (scratch[0] / "digits_fp16.onnx").is_file()
        and (scratch[0] / "digits_int8.engine").is_file()
    )
    assert not (NOTEBOOK.parent / "digits.cache").exists()
