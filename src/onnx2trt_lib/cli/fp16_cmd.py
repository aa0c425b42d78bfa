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
    "--keep-io-types", is_flag=True, help="Keep graph inputs and outputs float32 (Casts inside)."
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
    model, output, keep_io_types, keep_ops, keep_nodes, cache, max_activation, as_json, quiet
):
    """Convert a float32 model to float16; Casts only where FP16 and FP32 regions meet."""
    from ..quant.api import to_fp16

    def names(values: tuple[str, ...]) -> list[str]:
        return [n for v in values for n in parse_comma_list(v) or []]

    result = to_fp16(
        model,
        keep_io_types=keep_io_types,
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
