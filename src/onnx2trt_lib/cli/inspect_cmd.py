"""`onnx2trt inspect FILE`: show what an artifact holds; one function per kind of file.

Kinds are recognised by content, not suffix: a TensorRT calibration cache starts with
`TRT-<version>-<Algorithm>`; an engine has its `<engine>.json` sidecar beside it (or a known
magic), and its sidecar stands for it. Other kinds plug in by adding a (detector, printer)
pair to `INSPECTORS`. Names from the file are shown as text, never as rich markup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ._common import console, echo_lines, json_option, print_json, safe_text


def _is_calibration_cache(path: Path, head: bytes) -> bool:
    return head.startswith(b"TRT-")


def _is_ranges(path: Path, head: bytes) -> bool:
    return head.lstrip().startswith(b"{") and b"onnx2trt-ranges/" in head


def _is_engine(path: Path, head: bytes) -> bool:
    from ..build.engine import is_engine_artifact

    return is_engine_artifact(path)


def inspect_engine_file(path: Path, *, as_json: bool, limit: int | None) -> None:
    """The sidecar's record (backend, version, target, precision, I/O, profiles); loads only where it can."""
    from ..build.engine import engine_path_for, inspect_engine, inspection_lines

    trt_log = logging.getLogger("onnx2trt_lib.build.trt")
    level = trt_log.level
    if not trt_log.isEnabledFor(
        logging.INFO
    ):  # without -v: the report already says why it did not load
        trt_log.setLevel(logging.CRITICAL)
    try:
        report = inspect_engine(engine_path_for(path))
    finally:
        trt_log.setLevel(level)
    if as_json:
        print_json({"kind": "engine", **report})
        return
    echo_lines(inspection_lines(report))


def inspect_calibration_cache(path: Path, *, as_json: bool, limit: int | None) -> None:
    from ..calib.cache import read_cache

    cache = read_cache(path)
    rows = [
        {"tensor": name, "scale": scale, "amax": scale * 127.0, "hex": f"{cache.bits[name]:08x}"}
        for name, scale in cache.scales.items()
    ]
    if as_json:
        print_json(
            {
                "kind": "calibration-cache",
                "path": str(path),
                "version": cache.version,
                "algorithm": cache.algorithm,
                "tensors": rows,
            }
        )
        return
    _table(
        f"{path}: TensorRT calibration cache, header TRT-{cache.version}-{cache.algorithm}, {len(rows)} tensors",
        ["tensor", "scale", "amax", "hex"],
        [[r["tensor"], f"{r['scale']:.6g}", f"{r['amax']:.6g}", r["hex"]] for r in rows],
        limit,
    )


def _number(value: Any) -> str:
    return (
        f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"
    )


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
        rows.append(
            [
                name,
                _number(entry["amax"]),
                _number(entry.get("scale", entry["amax"] / 127.0)),
                _number(seen),
            ]
        )
    _table(
        f"{path}: ranges ({document.get('method')}, {document.get('mode')}), {len(rows)} tensors",
        ["tensor", "amax", "scale", "max seen"],
        rows,
        limit,
    )


def _table(title: str, columns: list[str], rows: list[list[Any]], limit: int | None) -> None:
    from rich.table import Table
    from rich.text import Text

    # Text, not str: rich would read `block[i]/out` or a file named `o[red]ut.cache` as markup
    grid = Table(*columns, title=Text(safe_text(title)), title_justify="left", box=None)
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        grid.add_row(*[Text(safe_text(str(v))) for v in row])
    console.print(grid)
    if len(shown) < len(rows):
        console.print(f"... {len(rows) - len(shown)} more (use --all)", markup=False)


def _is_onnx(path: Path, head: bytes) -> bool:
    return path.suffix.lower() == ".onnx"


def inspect_onnx_model(
    path: Path, *, as_json: bool, limit: int | None, target: str | None = None
) -> None:
    """Inputs/outputs with dynamic dims, opset, IR, op counts, external data, a lint summary."""
    from ..inspection import describe_model, model_lines

    report = describe_model(path, target=target)
    if as_json:
        print_json(report)
        return
    echo_lines(model_lines(report, limit=limit))


# (name, detector on the path and its first 4 KiB, printer): first match wins
INSPECTORS: list[tuple[str, Callable[[Path, bytes], bool], Callable[..., None]]] = [
    ("calibration-cache", _is_calibration_cache, inspect_calibration_cache),
    ("ranges", _is_ranges, inspect_ranges),
    ("engine", _is_engine, inspect_engine_file),
    ("onnx", _is_onnx, inspect_onnx_model),
]


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="Show every row (default: the first 200).")
@click.option(
    "--target",
    default=None,
    help="ONNX models: TensorRT version for the lint summary (default: installed, else newest).",
)
@json_option
def command(path: Path, show_all: bool, target: str | None, as_json: bool) -> None:
    """Show what an ONNX model, calibration cache, ranges JSON or engine (with its .json sidecar) holds.

    An ONNX model: inputs and outputs with their dynamic dimensions, opset, IR, op counts,
    external data and what the target's parser refuses. An engine is described from its
    sidecar (backend, version, target, precision, I/O, profiles) without TensorRT; where the
    engine also loads here, its layers are counted.
    """
    with open(path, "rb") as handle:
        head = handle.read(4096)
    for _, detect, show in INSPECTORS:
        if detect(path, head):
            extra = {"target": target} if show is inspect_onnx_model else {}
            show(path, as_json=as_json, limit=None if show_all else 200, **extra)
            return
    raise UsageError(
        f"{path}: not a file onnx2trt can inspect (expected an .onnx model, a TensorRT calibration cache, "
        "ranges JSON, or an engine with its .json sidecar)"
    )
