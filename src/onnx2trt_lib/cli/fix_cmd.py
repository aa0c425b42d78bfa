"""`onnx2trt fix`: run the pipeline a TensorRT version needs and write the fixed model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from rich.markup import escape

from .._io import check_output_path, load_model, save_model, write_bytes_atomic, write_text_atomic
from ..passes import PassManager
from ._common import (
    echo_lines,
    err_console,
    json_option,
    parse_comma_list,
    print_json,
    publishes_outputs,
    quiet_option,
)


@click.command("fix")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write the fixed model.",
)
@click.option(
    "--target",
    default=None,
    help="TensorRT version to fix for (default: the installed TensorRT, else the newest; "
    "see `onnx2trt lint --help`).",
)
@click.option(
    "--passes",
    "pass_names",
    default=None,
    help="Comma-separated pass names to run instead of the target's pipeline.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the per-pass report as JSON here.",
)
@click.option(
    "--set-dim",
    "set_dims",
    multiple=True,
    metavar="NAME=VALUE",
    help="Fix a symbolic dimension to a number, by name (batch=1) or INPUT:AXIS (x:0=1); repeatable.",
)
@click.option(
    "--rename-dim",
    "rename_dims",
    multiple=True,
    metavar="OLD=NEW",
    help="Rename a symbolic dimension, by name or INPUT:AXIS (x:2=height); repeatable.",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Run the original and the fixed model in ONNX Runtime on generated inputs and "
    "compare every output; on a difference, name the pass and write nothing.",
)
@click.option(
    "--check-inputs",
    type=click.Path(path_type=Path),
    default=None,
    help="Check on these inputs (.npz, one array per input name) instead of generated ones.",
)
@json_option
@quiet_option
@publishes_outputs
def command(
    model: Path,
    output: Path,
    target: str | None,
    pass_names: str | None,
    report_path: Path | None,
    set_dims: tuple[str, ...],
    rename_dims: tuple[str, ...],
    check: bool,
    check_inputs: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Fix MODEL for a TensorRT version and write it to OUTPUT (MODEL is never touched)."""
    from ..api import _resolve_passes
    from ..compat.targets import resolve_target

    target, why = resolve_target(target)
    pipeline = _resolve_passes(target, parse_comma_list(pass_names))
    check_output_path(output, inputs=(model,))
    if report_path is not None:
        check_output_path(report_path, inputs=(model,), outputs=(output,))
    feed = _check_feed(check_inputs) if check_inputs is not None else None
    with _Status(enabled=not (quiet or as_json) and err_console.is_terminal) as status:
        status(f"loading {model.name}")
        source = loaded = load_model(model)
        dim_changes: list[str] = []
        if set_dims or rename_dims:
            from ..dims import rewrite_dims

            source, dim_changes = rewrite_dims(loaded, set_dims=set_dims, rename_dims=rename_dims)
        fixed, report = PassManager(pipeline, progress=status.step).run(source)
        if check or feed is not None:
            from ..verify import check_fix

            status("checking the fixed model in ONNX Runtime")
            result = check_fix(source, fixed, pipeline, inputs=feed)
            report = dataclasses.replace(report, check=result)
        status(f"writing {output.name}")
        stored = model.read_bytes() if fixed is loaded else None
        if stored is not None and _is_self_contained(stored):
            # nothing changed: keep the file byte-identical
            write_bytes_atomic(output, stored)
        else:
            save_model(fixed, output)
    payload = {
        "input": str(model),
        "output": str(output),
        "target": target,
        "dims": dim_changes,
        **report.to_dict(),
    }
    if report_path is not None:
        write_text_atomic(report_path, json.dumps(payload, indent=2) + "\n")
    if as_json:
        print_json(payload)
    elif not quiet:
        echo_lines([f"target: {target} ({why})", *dim_changes, *report.summary_lines()])
        state = "modified" if report.modified else "unchanged"
        echo_lines(
            [f"{model} -> {output}: {state}, {report.nodes_before} -> {report.nodes_after} nodes"]
        )


def _check_feed(path: Path) -> dict:
    from .._io import load_arrays
    from ..errors import UsageError

    arrays = load_arrays(path, what="--check-inputs", error=UsageError)
    if not isinstance(arrays, dict):
        raise UsageError(f"--check-inputs {path}: give a .npz with one array per input name")
    return arrays


def _is_self_contained(stored: bytes) -> bool:
    """True when the .onnx file as stored holds all its weights.

    Judged on the file's bytes, not the loaded model: loading pulls external data in and
    marks the tensors as inline, but the bytes still point at a .data file beside the input.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    proto = onnx.load_model_from_string(stored)
    return not any(t.data_location == onnx.TensorProto.EXTERNAL for t in _get_all_tensors(proto))


class _Status:
    """A one-line spinner on stderr naming the current step (big models take minutes)."""

    def __init__(self, enabled: bool) -> None:
        self._status = err_console.status("") if enabled else None

    def __enter__(self) -> _Status:
        if self._status is not None:
            self._status.__enter__()
        return self

    def __call__(self, text: str) -> None:
        if self._status is not None:
            self._status.update(escape(text))

    def step(self, name: str, index: int, total: int) -> None:
        label = {"import": "reading the graph", "export": "building the fixed model"}.get(
            name, f"pass {name}"
        )
        self(f"[{index + 1}/{total}] {label}")

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)
