"""Execute docs/notebook.ipynb in place, so it is committed with the outputs a reader sees.

    python tools/run_notebook.py

Runs in a scratch folder (the notebook copies the sample there) with a scratch engine cache;
tests/docs/test_notebook.py executes it again and checks what the outputs say.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebook.ipynb"


def main() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory(prefix="onnx2trt-run-notebook-") as tmp:
        os.environ["TMPDIR"] = tmp
        os.environ["ONNX2TRT_CACHE_DIR"] = str(Path(tmp) / "engine-cache")
        client = nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp}}
        )
        client.execute()
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)  # no timestamps in the diff
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
