"""Docs, notebook, docstrings and messages speak to users: no references to internal notes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INTERNAL = re.compile(r"seed notes?|seed's|\bthe notes\b|notes' wording", re.IGNORECASE)


def _texts():
    yield ROOT / "README.md"
    yield from sorted((ROOT / "docs").rglob("*.md"))
    yield ROOT / "docs" / "notebook.ipynb"
    yield from sorted((ROOT / "src" / "onnx2trt_lib").rglob("*.py"))
    yield from sorted((ROOT / "tools").glob("*.py"))


def test_no_internal_references():
    hits = []
    for path in _texts():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if INTERNAL.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
