"""docs/notebook.ipynb runs top to bottom in a real Jupyter kernel and shows what it promises."""

from __future__ import annotations

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
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit the notebook without outputs (the test produces them)"
    )
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

    calib_html = _data(by_source["from onnx2trt_lib.calib.api import calibrate"], "text/html")
    assert "<b>Calibration</b>" in calib_html and "/Relu_1_output_0" in calib_html

    plot_cell = by_source["%matplotlib inline"]
    pngs = [o["data"]["image/png"] for o in _outputs(plot_cell) if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and len(pngs[0]) > 10_000  # one figure, drawn (base64 PNG)
    assert "amax = 2.998" in _text(plot_cell)  # the tensor docs/calibration.md shows

    compare_cell = by_source["def accuracy(outputs):"]
    assert "quantized tensor (worst first)" in _data(compare_cell, "text/html")
    metric = _text(compare_cell)
    assert "'candidate':" in metric and "'reference':" in metric

    scratch = [p for p in tmp_path.iterdir() if p.name.startswith("onnx2trt-notebook-")]
    assert (
        len(scratch) == 1
        and (scratch[0] / "digits.cache").is_file()
        and (scratch[0] / "digits_int8.onnx").is_file()
    )
    assert not (NOTEBOOK.parent / "digits.cache").exists()
