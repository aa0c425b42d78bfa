"""`onnx2trt compare A B`: run two models/engines on the same inputs; exit 3 when they differ.

B is the reference (usually the FP32 .onnx). Inputs: --input .npz files, or --data, any
calibration data source (image list/folder/glob with --preprocess, .npy/.npz), batched like
`calibrate` does; random static data when neither is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._common import (
    EXIT_FINDINGS,
    data_source_options,
    echo_lines,
    json_option,
    print_json,
    quiet_option,
)
from .run_cmd import allow_host_code_option, feeds_for, runner_options


def collect_feeds(
    runner: Any,
    inputs: tuple[Path, ...],
    *,
    data: str | None = None,
    onnx_model: Path | None = None,
    preprocess: str | None = None,
    shapes: tuple[str, ...] = (),
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> list[dict]:
    """Every feed to compare on: --input files, or the batches of a --data source."""
    from ..errors import UsageError

    if data is None:
        return feeds_for(runner, inputs)
    if inputs:
        raise UsageError("give --input files or --data, not both")
    if onnx_model is None:
        raise UsageError(
            "--data reads the input shapes from an .onnx model; one of the two must be .onnx"
        )
    from ..calib.collect import model_feeds

    return model_feeds(
        onnx_model,
        data,
        preprocess=preprocess,
        shapes=list(shapes) or None,
        batch_size=batch_size,
        max_batches=max_batches,
    )


@click.command("compare")
@click.argument("model_a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("model_b", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=".npz of inputs keyed by input name; repeat for several feeds (random static data if omitted).",
)
@click.option(
    "--data",
    "-d",
    "data",
    default=None,
    help="Compare on a data set: image list (.txt), folder, quoted glob (with --preprocess), or .npy/.npz.",
)
@data_source_options
@click.option(
    "--max-batches",
    type=click.IntRange(min=1),
    default=None,
    help="Compare on at most this many --data batches.",
)
@click.option(
    "--atol", default=1e-5, show_default=True, type=click.FloatRange(0), help="Absolute tolerance."
)
@click.option(
    "--rtol", default=1e-3, show_default=True, type=click.FloatRange(0), help="Relative tolerance."
)
@click.option(
    "--provider",
    type=click.Choice(["cpu", "cuda", "auto"]),
    default="cpu",
    show_default=True,
    help="ONNX Runtime provider for .onnx models.",
)
@click.option("--cuda-graph", is_flag=True, help="Replay CUDA graphs for engines.")
@click.option(
    "--per-tensor",
    is_flag=True,
    help="Also the SQNR of every quantized tensor of MODEL_A vs MODEL_B, worst first (both .onnx).",
)
@allow_host_code_option
@json_option
@quiet_option
@click.pass_context
def command(
    ctx: click.Context,
    model_a: Path,
    model_b: Path,
    inputs: tuple[Path, ...],
    data: str | None,
    preprocess: str | None,
    shapes: tuple[str, ...],
    batch_size: int | None,
    max_batches: int | None,
    atol: float,
    rtol: float,
    provider: str,
    cuda_graph: bool,
    allow_host_code: bool,
    per_tensor: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Compare outputs of MODEL_A against MODEL_B (the reference): max abs/rel error, cosine, worst elements.

    An element passes when |a-b| <= atol + rtol*|b|. Exit code 3 when any output fails.
    """
    from ..runtime import compare, open_runner

    with (
        open_runner(
            model_a, **runner_options(model_a, provider, cuda_graph, allow_host_code)
        ) as runner_a,
        open_runner(
            model_b, **runner_options(model_b, provider, cuda_graph, allow_host_code)
        ) as runner_b,
    ):
        onnx_model = next((m for m in (model_b, model_a) if m.suffix.lower() == ".onnx"), None)
        feeds = collect_feeds(
            runner_b,
            inputs,
            data=data,
            onnx_model=onnx_model,
            preprocess=preprocess,
            shapes=shapes,
            batch_size=batch_size,
            max_batches=max_batches,
        )
        report = compare(runner_a, runner_b, feeds, atol=atol, rtol=rtol)
    layers = _per_tensor_report(model_a, model_b, feeds) if per_tensor else None
    if as_json:
        payload = report.to_dict()
        if layers is not None:
            payload["per_tensor"] = layers.to_dict()["tensors"]
        print_json(payload)
    elif not quiet:
        echo_lines(report.summary())
        if layers is not None:
            echo_lines(layers.summary_lines())
    if not report.passed:
        ctx.exit(EXIT_FINDINGS)


def _per_tensor_report(model_a: Path, model_b: Path, feeds: list[dict]):
    """Layer-wise SQNR of MODEL_A's quantized tensors against the same tensors of MODEL_B."""
    from .._io import load_model
    from ..errors import UsageError
    from ..quant.accuracy import compare as layer_compare

    if model_a.suffix.lower() != ".onnx" or model_b.suffix.lower() != ".onnx":
        raise UsageError(
            "--per-tensor compares two .onnx models (e.g. the Q/DQ model against the FP32 one)"
        )
    return layer_compare(load_model(model_b), load_model(model_a), feeds)
