"""`onnx2trt quantize`: INT8 Q/DQ model from a float model and a calibration cache, accuracy protected."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..errors import UsageError
from ._common import (
    agreement_options,
    data_source_options,
    echo_lines,
    json_option,
    parse_comma_list,
    print_json,
    publishes_outputs,
    quiet_option,
)


def _load_data(
    path: str, model: str, preprocess: str | None, shapes: tuple[str, ...], batch_size: int | None
) -> object:
    """--data: a .npy (one input, batch on axis 0), .npz (arrays by input name), or images
    (list, folder, quoted glob) preprocessed and batched like `calibrate` does."""
    import numpy as np

    from .._io import load_arrays

    src = Path(path)
    if src.suffix.lower() not in (".npy", ".npz"):
        from ..calib.collect import model_feeds

        return model_feeds(
            model, path, preprocess=preprocess, shapes=list(shapes) or None, batch_size=batch_size
        )
    if not src.is_file():
        raise UsageError(f"--data {src}: no such file (give a .npy or .npz of held-out inputs)")
    loaded = load_arrays(src, what="--data", error=UsageError)
    if isinstance(loaded, np.ndarray):
        if loaded.ndim == 0:
            raise UsageError(
                f"--data {src}: holds a scalar; give a batch of inputs (batch on axis 0)"
            )
        return loaded
    if not loaded or any(v.ndim == 0 for v in loaded.values()):
        raise UsageError(
            f"--data {src}: give one array per input name, batch on axis 0 (found none, or a scalar)"
        )
    from .._io import load_model
    from ..quant.accuracy import rows_per_batch

    step = rows_per_batch(load_model(model, check=False))  # a fixed batch size, as for .npy
    first = len(next(iter(loaded.values())))
    return [{k: v[i : i + step] for k, v in loaded.items()} for i in range(0, first, step)]


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """click's float takes 'nan' and 'inf'; a NaN bound is never met and never failed."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of dB")
    return value


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--cache",
    "cache",
    required=True,
    type=click.Path(dir_okay=False),
    help="TensorRT calibration cache (ours or one TensorRT wrote) with per-tensor ranges.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Q/DQ model to write."
)
@click.option(
    "--exclude", multiple=True, help="Node names to keep in float (repeat or comma-separate)."
)
@click.option("--exclude-tensor", multiple=True, help="Tensor names never to quantize.")
@click.option(
    "--ops", default=None, help="Op types to quantize (default Conv,ConvTranspose,Gemm,MatMul)."
)
@click.option(
    "--no-protect", is_flag=True, help="Plain full INT8: skip the accuracy protection search."
)
@click.option(
    "--data",
    "data_path",
    default=None,
    help="Held-out inputs for protection: .npy (one-input model), .npz (by input name), or an image "
    "list/folder/quoted glob with --preprocess.",
)
@data_source_options
@click.option(
    "--min-sqnr",
    default=None,
    type=float,
    callback=_finite,
    help="Bound of --agreement sqnr: output SQNR vs FP32 in dB (default 20).",
)
@agreement_options
@click.option(
    "--compensate/--no-compensate",
    default=None,
    help="With --data: re-solve each INT8 layer's weights and bias by least squares for its "
    "quantized input, then round them to INT8; layers kept in float keep theirs. Default: on "
    "with --data; it competes with the plain model (a model that meets the target wins, then 5 "
    "points more INT8 MACs; the second search is skipped where the first meets the target with "
    ">= 95% INT8 MACs; without protection: the one that agrees better).",
)
@click.option(
    "--strict", is_flag=True, help="Refuse a cache that misses tensors the model quantizes."
)
@json_option
@quiet_option
@publishes_outputs
def command(
    model,
    cache,
    output,
    exclude,
    exclude_tensor,
    ops,
    no_protect,
    data_path,
    preprocess,
    shapes,
    batch_size,
    min_sqnr,
    agreement,
    min_agreement,
    compensate,
    strict,
    as_json,
    quiet,
):
    """Insert symmetric INT8 Q/DQ pairs (TensorRT explicit quantization) from a calibration cache.

    With --data the INT8 model is measured against FP32 (expected accuracy change, top-1 or box
    agreement, or output SQNR: see --agreement) and layers are kept in float, most sensitive
    first, until it agrees (--no-protect: measured only); without it, everything with a range
    is INT8.
    """
    from ..quant.accuracy import DataShapeError
    from ..quant.agreement import DEFAULT_MIN_SQNR_DB, Criterion
    from ..quant.api import quantize

    def names(values: tuple[str, ...]) -> list[str]:
        return [n for v in values for n in parse_comma_list(v) or []]

    if compensate and not data_path:
        raise UsageError("--compensate measures each layer's input: add --data")
    data = _load_data(data_path, model, preprocess, shapes, batch_size) if data_path else None
    try:
        result = quantize(
            model,
            cache,
            exclude=names(exclude),
            exclude_tensors=names(exclude_tensor),
            op_types=parse_comma_list(ops),
            protect=not no_protect,
            data=data,
            criterion=Criterion(
                min_sqnr_db=DEFAULT_MIN_SQNR_DB if min_sqnr is None else min_sqnr,
                agreement="sqnr" if min_sqnr is not None and agreement == "auto" else agreement,
                min_agreement=min_agreement,
            ),
            strict=strict,
            compensate=compensate,
            output=output,
        )
    except DataShapeError as exc:
        raise UsageError(f"--data {data_path}: {exc}") from None
    if as_json:
        print_json({"output": output, **result.to_dict()})
        return
    if quiet:
        return
    echo_lines(result.summary_lines())
    if result.missing_ranges:
        echo_lines(
            [
                f"no range for {len(result.missing_ranges)} tensor(s): {', '.join(result.missing_ranges[:10])}"
            ]
        )
    echo_lines([f"wrote {output}"])
