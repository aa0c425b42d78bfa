"""`onnx2trt build MODEL -o ENGINE`: ONNX to a TensorRT engine file plus its JSON sidecar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from . import _common
from ._common import (
    build_shape_options,
    json_option,
    print_json,
    profiles_from_options,
    publishes_outputs,
    quiet_option,
)

if TYPE_CHECKING:  # rich is imported when a bar is shown, not at CLI start
    from rich.progress import TaskID

_BACKENDS = ("auto", "tensorrt", "tensorrt-rtx")


@click.command("build")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Engine file to write; its sidecar goes to ENGINE.json.",
)
@click.option(
    "--fp16",
    is_flag=True,
    help="Allow FP16 (TensorRT 10: builder flag; TensorRT 11/RTX: FP16 graph pass).",
)
@click.option("--int8", is_flag=True, help="INT8, calibrated from --cache or --data.")
@click.option(
    "--cache",
    "calibration_cache",
    type=click.Path(dir_okay=False, path_type=str),
    help="INT8 calibration cache (TensorRT text format).",
)
@click.option(
    "--data",
    "calibration_data",
    type=click.Path(path_type=str),
    help="INT8 calibration data when no --cache is given: calibrated by onnx2trt_lib before the build (every backend).",
)
@click.option(
    "--preprocess",
    "-p",
    default=None,
    metavar="PRESET|CONFIG",
    help="Image preprocessing for --data: imagenet, yolo, paddleocr, paddleocr-rec, or a "
    ".json/.toml config (as in calibrate).",
)
@click.option(
    "--fp16-io",
    is_flag=True,
    help="With --fp16 on TensorRT 11/RTX: make inputs and outputs float16 too (default: float32).",
)
@build_shape_options
@click.option("--workspace", metavar="SIZE", help="Workspace memory pool limit, e.g. 1G or 512M.")
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=str),
    help="Timing cache file: read if present, written after the build.",
)
@click.option(
    "--builder-optimization-level",
    type=int,
    metavar="0-5",
    help="Higher: slower build, maybe faster engine.",
)
@click.option(
    "--version-compatible",
    is_flag=True,
    help="Engine loadable by later TensorRT versions (where supported).",
)
@click.option(
    "--hardware-compatibility",
    type=click.Choice(["ampere-plus", "same-compute-capability"]),
    help="Full TensorRT only: run on other GPUs than the build GPU.",
)
@click.option(
    "--backend",
    type=click.Choice(_BACKENDS),
    default="auto",
    show_default=True,
    help="Which TensorRT builds the engine.",
)
@click.option(
    "--engine-cache-dir",
    type=click.Path(file_okay=False, path_type=str),
    help="Engine cache folder (default: $ONNX2TRT_CACHE_DIR or ~/.cache/onnx2trt/engines).",
)
@click.option(
    "--no-engine-cache", is_flag=True, help="Always build; neither read nor fill the engine cache."
)
@json_option
@quiet_option
@publishes_outputs
def command(
    model: str,
    output: str,
    fp16: bool,
    int8: bool,
    calibration_cache: str | None,
    calibration_data: str | None,
    preprocess: str | None,
    fp16_io: bool,
    shapes: tuple[str, ...],
    min_shapes: tuple[str, ...],
    opt_shapes: tuple[str, ...],
    max_shapes: tuple[str, ...],
    trt_min_shapes: tuple[str, ...],
    trt_opt_shapes: tuple[str, ...],
    trt_max_shapes: tuple[str, ...],
    workspace: str | None,
    timing_cache: str | None,
    builder_optimization_level: int | None,
    version_compatible: bool,
    hardware_compatibility: str | None,
    backend: str,
    engine_cache_dir: str | None,
    no_engine_cache: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Build a TensorRT engine from MODEL (ONNX) and write it to ENGINE with a JSON sidecar.

    A second identical build (same ONNX, options and TensorRT) is served from the engine cache.
    """
    from ..build import BuildConfig, Builder, parse_memory_size

    profiles = profiles_from_options(
        shapes, min_shapes, opt_shapes, max_shapes, trt_min_shapes, trt_opt_shapes, trt_max_shapes
    )
    config = BuildConfig(
        fp16=fp16,
        int8=int8,
        calibration_cache=calibration_cache,
        calibration_data=calibration_data,
        preprocess=preprocess,
        fp16_io=fp16_io,
        profiles=profiles,
        workspace=parse_memory_size(workspace) if workspace is not None else None,
        timing_cache=timing_cache,
        builder_optimization_level=builder_optimization_level,
        version_compatible=version_compatible,
        hardware_compatibility=hardware_compatibility,
        backend=backend,
    )
    show_progress = not (quiet or as_json) and _stderr_is_terminal()  # no progress residue in logs
    with _progress(show_progress) as progress:
        builder = Builder(
            config, cache_dir=False if no_engine_cache else engine_cache_dir, progress=progress
        )
        result = builder.build(model, output)
    if as_json:
        print_json(result.summary())
        return
    if quiet:
        return
    how = "from the engine cache" if result.cache_hit else "built"
    click.echo(
        f"{how}: {result.path} ({len(result.engine) / 1024:.0f} KiB, {result.backend.label}, "
        f"target {result.sidecar.get('target')}) in {result.seconds:.2f} s",
    )
    for kind in ("inputs", "outputs"):
        for tensor in result.sidecar.get(kind) or []:
            shape = "x".join("?" if d < 0 else str(d) for d in tensor["shape"]) or "scalar"
            click.echo(f"  {kind[:-1]:<6} {tensor['name']}  {tensor['dtype']}  {shape}")


def _stderr_is_terminal() -> bool:
    """rich's answer (FORCE_TERMINAL, TTY_COMPATIBLE...), asked only when stderr is a TTY: an
    engine-cache hit in a script or log never loads rich."""
    import sys

    if (
        not sys.stderr.isatty()
        and not os.environ.get("FORCE_COLOR")
        and not os.environ.get("TTY_COMPATIBLE")
    ):
        return False
    from ._common import err_console

    return bool(err_console.is_terminal)


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress display fed by TensorRT's build phases (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=_common.err_console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(phase: str, step: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=max(total, 1))
            bar.update(tasks[phase], completed=min(step, max(total, 1)))

        yield update
