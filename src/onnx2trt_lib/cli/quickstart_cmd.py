"""`onnx2trt quickstart`: the README's main job, on the sample model bundled with the package."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import console, json_option, print_json, quiet_option


@click.command("quickstart")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("onnx2trt-quickstart"),
    show_default=True,
    help="Folder for every artifact (created if missing).",
)
@json_option
@quiet_option
def command(out_dir: Path, as_json: bool, quiet: bool) -> None:
    """Lint, fix, calibrate, quantize (INT8 Q/DQ + FP16), compare accuracy and build an engine for the bundled sample."""
    from ..quickstart import TARGET, run_quickstart

    show = not (as_json or quiet)
    if show:
        console.print(
            f"onnx2trt quickstart: the bundled digits CNN from ONNX to INT8/FP16 models and a "
            f"TensorRT engine, written to {out_dir}/",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    with console.status("starting", spinner="dots") if show else _nullcontext() as status:

        def step(message: str) -> None:
            if show:
                status.update(message)
                console.print(f"[dim]-[/] {message}", highlight=False)

        summary = run_quickstart(out_dir, step=step)
    if as_json:
        print_json(summary.to_dict())
        return
    if quiet:
        return
    from rich.table import Table

    console.print()
    console.print(
        f"lint {TARGET} before fix: {len(summary.findings_before)} finding(s); after: {len(summary.findings_after)}",
        markup=False,
    )
    for line in summary.fix_changes:
        console.print(f"  {line}", markup=False)
    table = Table(
        "model",
        "accuracy",
        title=f"held-out accuracy ({summary.calibrated_tensors} tensors calibrated)",
    )
    for name, acc in summary.accuracy.items():
        table.add_row(name, f"{acc:.4f}")
    console.print(table)
    if summary.int8_excluded:
        console.print(
            f"kept in float by accuracy protection: {', '.join(summary.int8_excluded)}",
            markup=False,
        )
    console.print(f"engine: {summary.engine or 'not built'} ({summary.engine_note})", markup=False)
    console.print("wrote", markup=False)
    width = max(map(len, summary.artifacts), default=0)
    for name, path in summary.artifacts.items():  # plain lines: paths are never wrapped
        console.print(f"  {name:<{width}}  {path}", markup=False, highlight=False, soft_wrap=True)
    total = sum(summary.seconds.values())
    console.print(f"done in {total:.1f} s", markup=False)
    console.print()
    console.print("next:", markup=False)
    for line in summary.next_steps:
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        "  guides: docs/getting-started.md, docs/calibration.md (in the repository)", markup=False
    )


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
