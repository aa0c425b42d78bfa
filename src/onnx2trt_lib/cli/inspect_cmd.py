"""`onnx2trt inspect FILE`: show what an artifact holds; one function per kind of file.

Kinds are recognised by content, not suffix: a TensorRT calibration cache starts with
`TRT-<version>-<Algorithm>`. Other kinds (an engine sidecar .json, ...) plug in by adding
a (detector, printer) pair to `INSPECTORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ._common import console, json_option, print_json


def _is_calibration_cache(head: bytes) -> bool:
    return head.startswith(b"TRT-")


def _is_ranges(head: bytes) -> bool:
    return head.lstrip().startswith(b"{") and b"onnx2trt-ranges/" in head


def inspect_calibration_cache(path: Path, *, as_json: bool, limit: int | None) -> None:
    from ..calib.cache import read_cache

    cache = read_cache(path)
    rows = [{"tensor": name, "scale": scale, "amax": scale * 127.0, "hex": f"{cache.bits[name]:08x}"}
            for name, scale in cache.scales.items()]
    if as_json:
        print_json({"kind": "calibration-cache", "path": str(path), "version": cache.version,
                    "algorithm": cache.algorithm, "tensors": rows})
        return
    _table(f"{path}: TensorRT calibration cache, header TRT-{cache.version}-{cache.algorithm}, {len(rows)} tensors",
           ["tensor", "scale", "amax", "hex"], [[r["tensor"], f"{r['scale']:.6g}", f"{r['amax']:.6g}", r["hex"]] for r in rows],
           limit)


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def inspect_ranges(path: Path, *, as_json: bool, limit: int | None) -> None:
    from ..calib.ranges import read_ranges_document

    document = read_ranges_document(path)
    if as_json:
        print_json({"kind": "ranges", "path": str(path), **document})
        return
    rows = []
    for name, entry in document.get("tensors", {}).items():
        hist = entry.get("histogram")
        seen = hist.get("amax_seen") if isinstance(hist, dict) else None
        rows.append([name, _number(entry["amax"]), _number(entry.get("scale", entry["amax"] / 127.0)), _number(seen)])
    _table(f"{path}: ranges ({document.get('method')}, {document.get('mode')}), {len(rows)} tensors",
           ["tensor", "amax", "scale", "max seen"], rows, limit)


def _table(title: str, columns: list[str], rows: list[list[Any]], limit: int | None) -> None:
    from rich.table import Table

    grid = Table(*columns, title=title, title_justify="left", box=None)
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        grid.add_row(*[str(v) for v in row])
    console.print(grid)
    if len(shown) < len(rows):
        console.print(f"... {len(rows) - len(shown)} more (use --all)", markup=False)


# (name, detector on the first 4 KiB, printer): first match wins
INSPECTORS: list[tuple[str, Callable[[bytes], bool], Callable[..., None]]] = [
    ("calibration-cache", _is_calibration_cache, inspect_calibration_cache),
    ("ranges", _is_ranges, inspect_ranges),
]


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="Show every row (default: the first 200).")
@json_option
def command(path: Path, show_all: bool, as_json: bool) -> None:
    """Show the tensors and ranges in a calibration cache (or a ranges JSON)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    for _, detect, show in INSPECTORS:
        if detect(head):
            show(path, as_json=as_json, limit=None if show_all else 200)
            return
    raise UsageError(f"{path}: not a file onnx2trt can inspect (expected a TensorRT calibration cache or ranges JSON)")
