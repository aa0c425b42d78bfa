"""`onnx2trt lint`: which nodes a TensorRT version refuses, and which pass fixes each."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import EXIT_FINDINGS, console, json_option, print_json, quiet_option


@click.command("lint")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--target",
    default=None,
    help="TensorRT version whose ONNX parser to check against (default: the installed TensorRT, "
    "else the newest). Known: tensorrt-7.0 ... tensorrt-10, tensorrt-11, tensorrt-rtx.",
)
@json_option
@quiet_option
def command(model: Path, target: str | None, as_json: bool, quiet: bool) -> None:
    """List the nodes of MODEL that TARGET's parser refuses. Exit 0 clean, 3 findings."""
    from .._io import load_model
    from ..api import lint
    from ..compat import lint_notes
    from ..compat.targets import resolve_target

    target, why = resolve_target(target)
    proto = load_model(model)
    findings = lint(proto, target=target)
    notes = lint_notes(proto, target)
    if not (quiet or as_json):  # after the model loaded: a bad input stays a one-line error
        console.print(f"target: {target} ({why})", markup=False)
    if as_json:
        print_json(
            {
                "model": str(model),
                "target": target,
                "findings": [f.to_dict() for f in findings],
                "notes": notes,
            }
        )
    elif quiet:
        pass  # the exit code says it: 0 clean, 3 findings
    elif findings:
        for f in findings:
            console.print(
                f"{f.node} ({f.op}): {f.rule} -> {f.fix_pass or 'no automatic fix'}", markup=False
            )
            console.print(f"    {f.message}", markup=False)
        fixable = sum(f.fix_pass is not None for f in findings)
        console.print(
            f"{len(findings)} finding(s) for {target}, {fixable} fixable with `onnx2trt fix --target {target}`",
            markup=False,
        )
    else:
        console.print(f"{model}: nothing {target} refuses", markup=False)
    if not as_json and not quiet:
        for note in notes:
            console.print(f"note: {note}", markup=False)
    if findings:
        click.get_current_context().exit(EXIT_FINDINGS)
