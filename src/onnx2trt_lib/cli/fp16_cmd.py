"""`onnx2trt fp16`: FP16 model for TensorRT 11 (no FP16 builder flag there), overflow-prone nodes kept FP32."""

from __future__ import annotations

import click

from ._common import (
    echo_lines,
    json_option,
    parse_comma_list,
    print_json,
    publishes_outputs,
    quiet_option,
)


@click.command("fp16")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="FP16 model to write."
)
@click.option(
    "--fp16-io",
    is_flag=True,
    help="Make graph inputs and outputs float16 too (default: they stay float32, Casts inside).",
)
@click.option(
    "--keep-io-types",
    is_flag=True,
    hidden=True,
    help="Inputs and outputs stay float32: now the default (kept for old command lines).",
)
@click.option(
    "--keep-ops", multiple=True, help="Op types to keep in float32 (repeat or comma-separate)."
)
@click.option("--keep-nodes", multiple=True, help="Node names to keep in float32.")
@click.option(
    "--cache",
    default=None,
    type=click.Path(dir_okay=False),
    help="Calibration cache: nodes touching tensors above --max-activation stay float32.",
)
@click.option(
    "--max-activation",
    default=None,
    type=float,
    help="Activation bound for --cache (default 8188).",
)
@json_option
@quiet_option
@publishes_outputs
def command(
    model,
    output,
    fp16_io,
    keep_io_types,
    keep_ops,
    keep_nodes,
    cache,
    max_activation,
    as_json,
    quiet,
):
    """Convert a float32 model to float16; Casts only where FP16 and FP32 regions meet.

    Inputs and outputs stay float32 (as Polygraphy's `convert --fp-to-fp16` keeps them), so
    the same data feeds both models; --fp16-io makes them float16 too.
    """
    from ..errors import UsageError
    from ..quant.api import to_fp16

    def names(values: tuple[str, ...]) -> list[str]:
        return [n for v in values for n in parse_comma_list(v) or []]

    if fp16_io and keep_io_types:
        raise UsageError("--fp16-io and --keep-io-types contradict each other; give one")
    result = to_fp16(
        model,
        keep_io_types=not fp16_io,
        keep_ops=names(keep_ops),
        keep_nodes=names(keep_nodes),
        ranges=cache,
        max_activation=max_activation,
        output=output,
    )
    if as_json:
        print_json({"output": output, **result.to_dict()})
        return
    if not quiet:
        echo_lines(result.summary_lines() + [f"wrote {output}"])
