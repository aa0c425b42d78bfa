"""`onnx2trt ncnn MODEL --data SRC -o OUTDIR`: FP32 ncnn model, ncnn2table table and INT8 ncnn model."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import (
    add_state_option,
    data_source_options,
    echo_lines,
    json_option,
    method_options_option,
    parse_method_options,
    print_json,
    quiet_option,
)


@click.command("ncnn")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "-d",
    "data",
    required=True,
    help="Calibration data: image list (.txt), folder, quoted glob, or .npy/.npz of ready tensors.",
)
@click.option(
    "--output",
    "-o",
    "output_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for NAME.param/.bin (FP32), NAME.table and NAME-int8.param/.bin.",
)
@click.option("--name", default=None, help="File name stem (default: the model's).")
@click.option(
    "--method",
    type=click.Choice(["entropy", "ncnn-kl", "max", "percentile", "mse"]),
    default="mse",
    show_default=True,
    help="Range method (mse, as for Q/DQ: ncnn's INT8 is per-tensor on each layer's input); ncnn-kl is ncnn2table's own KL search.",
)
@method_options_option
@data_source_options
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TensorRT cache to reuse when it matches (as `calibrate` wrote it), else to write.",
)
@add_state_option
@click.option("--force", is_flag=True, help="Recompute even when --cache matches.")
@click.option("--no-protect", is_flag=True, help="Every mapped layer INT8, whatever the agreement.")
@click.option(
    "--min-sqnr",
    type=float,
    default=20.0,  # quant.agreement.DEFAULT_MIN_SQNR_DB (not imported: the quant package is slow to load)
    show_default=True,
    help="Protection bound: every output's SQNR against the FP32 ncnn model, in dB.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.99,
    show_default=True,
    help="Protection bound: share of arg-max labels (last axis) equal to the FP32 ncnn model's.",
)
@click.option(
    "--int8-depthwise/--no-int8-depthwise",
    default=None,
    help="ConvolutionDepthWise in INT8 or FP32; default: FP32 on x86 (ncnn's x86 INT8 depthwise kernel "
    "is slower than its FP32 one), INT8 elsewhere. Pass --int8-depthwise on x86 for an ARM target.",
)
@click.option(
    "--int8-image-conv/--no-int8-image-conv",
    default=None,
    help="Convolutions reading at most 3 channels (such as the image) in INT8 or FP32; default: FP32 on x86 "
    "(not faster in INT8 there), INT8 elsewhere.",
)
@click.option(
    "--no-requantize",
    is_flag=True,
    help="No requantize fusion (INT8 convolution output straight into the next INT8 convolution).",
)
@click.option(
    "--int8-gemm",
    is_flag=True,
    help="Also Gemm layers with constant weights in ncnn's table-free INT8 (activations quantized per row at run time).",
)
@json_option
@quiet_option
def command(
    model,
    data,
    output_dir,
    name,
    method,
    method_options,
    preprocess,
    shapes,
    batch_size,
    cache,
    add_states,
    force,
    no_protect,
    min_sqnr,
    min_agreement,
    int8_depthwise,
    int8_image_conv,
    no_requantize,
    int8_gemm,
    as_json,
    quiet,
):
    """Convert MODEL to ncnn with pnnx and quantize it to INT8 from our calibration.

    Each Convolution/ConvolutionDepthWise/InnerProduct is traced back to the ONNX tensor that
    feeds it; those tensors are calibrated on --data, and the table and INT8 model are written
    as ncnn2table and ncnn2int8 write them. Layers that break the agreement with the FP32 ncnn
    model are kept in FP32 (--no-protect turns this off). Needs pip install 'onnx2trt_lib[ncnn]'.
    """
    from ..ncnn import ncnn_int8

    result = ncnn_int8(
        model,
        data,
        output_dir,
        method=method,
        method_options=parse_method_options(method_options),
        shapes=list(shapes) or None,
        preprocess=preprocess,
        batch_size=batch_size,
        cache=cache,
        add_states=add_states,
        force=force,
        protect=not no_protect,
        min_sqnr=min_sqnr,
        min_agreement=min_agreement,
        name=name,
        depthwise=int8_depthwise,
        image_conv=int8_image_conv,
        requantize=not no_requantize,
        gemm=int8_gemm,
    )
    if as_json:
        print_json(result.to_dict())
        return
    if quiet:
        return
    total = len(result.layers)
    lines = [f"{len(result.quantized)} of {total} Convolution/InnerProduct layers INT8"]
    if result.kept_fp32:
        lines.append(f"kept in FP32 for agreement: {', '.join(result.kept_fp32)}")
    if result.int8_gemm:
        lines.append(
            f"{len(result.int8_gemm)} Gemm layers INT8 (int8 weights, per-row activations)"
        )
    if result.requantized:
        lines.append(f"{len(result.requantized)} INT8 layers write INT8 (requantize fusion)")
    if result.agreement is not None:
        lines.append(
            f"against FP32 ncnn: SQNR {result.sqnr_db:.1f} dB, arg-max agreement {result.agreement:.4f}"
        )
    lines += [
        f"wrote {p}"
        for p in (result.param, result.bin, result.table, result.int8_param, result.int8_bin)
    ]
    echo_lines(lines)
