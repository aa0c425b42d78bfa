"""`onnx2trt calibrate MODEL --data SRC -o CACHE`: INT8 calibration to a TensorRT cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from ._common import (
    add_state_option,
    agreement_options,
    console,
    data_source_options,
    echo_lines,
    err_console,
    json_option,
    method_options_option,
    parse_method_options,
    print_json,
    publishes_outputs,
    quiet_option,
)

if TYPE_CHECKING:  # rich is imported when a bar is shown, not at CLI start
    from rich.progress import Progress, TaskID


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "-d",
    "data",
    required=True,
    help="Image list (.txt, one path a line), folder, quoted glob, or .npy/.npz of ready tensors.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TensorRT calibration cache to write.",
)
@click.option(
    "--method",
    type=click.Choice(["entropy", "max", "percentile", "mse", "ncnn-kl"]),
    default=None,
    help="Range method [default: entropy for the cache; for --qdq, mse or the 99.999th percentile, whichever full INT8 agrees better with FP32].",
)
@method_options_option
@data_source_options
@click.option(
    "--ranges",
    "ranges_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write per-tensor ranges (amax, method, histogram stats) as JSON.",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "two-pass", "single-pass"]),
    default="auto",
    show_default=True,
    help="two-pass: exact power-of-two ranges, the same bytes for any batch size, order or split; single-pass: ranges from the first batch.",
)
@click.option(
    "--scope",
    type=click.Choice(["all", "qdq"]),
    default="all",
    show_default=True,
    help="all: every activation (TensorRT <= 10 reads them all); qdq: only the inputs that Q/DQ "
    "quantizes (TensorRT 11), several times faster.",
)
@click.option(
    "--trt-version",
    default=None,
    help="TensorRT version that will read the cache (header), e.g. 8.6.1 or 10.3.0.",
)
@click.option(
    "--save-state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save the histograms (.npz or .json) to merge with other runs.",
)
@add_state_option
@click.option(
    "--force", is_flag=True, help="Recompute even when the sidecar says the cache matches."
)
@click.option(
    "--ignore-nonfinite", is_flag=True, help="Skip NaN/Inf activations instead of failing."
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write PNGs (histogram, threshold, KL curve) of the most clipped tensors into this folder.",
)
@click.option(
    "--plots-top",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="How many tensors --plots draws.",
)
@click.option(
    "--qdq",
    "qdq_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the explicitly quantized (Q/DQ) model, for TensorRT 11: MSE or percentile "
    "ranges from the same histograms (whichever full INT8 agrees better), checked against FP32 on the calibration data and protected (layers kept in float) "
    "until it agrees. Without --method the histograms are computed even where the cache is up "
    "to date, so a re-run writes the same model (and rewrites the cache, the same bytes).",
)
@click.option(
    "--no-protect", is_flag=True, help="--qdq: plain full INT8, measured but not protected."
)
@agreement_options
@click.option(
    "--equalize",
    is_flag=True,
    help="--qdq: cross-layer equalisation of Conv -> Relu/Relu6 -> Conv weights before calibrating "
    "(same FP32 outputs; the cache then describes the equalised model).",
)
@click.option(
    "--smooth-quant",
    "smooth_alpha",
    type=click.FloatRange(0.0, 1.0),
    is_flag=False,
    flag_value=0.5,
    default=None,
    metavar="[ALPHA]",
    help="--qdq: SmoothQuant scale migration (alpha 0.5 unless given) for MatMul/Gemm fed by "
    "LayerNorm or a residual Add, before calibrating (same FP32 outputs).",
)
@click.option(
    "--bias-correction/--no-bias-correction",
    default=None,
    help="--qdq: subtract each INT8 layer's own mean output shift (activation and weight "
    "quantization, measured on the data) from its bias; layers kept in "
    "float keep theirs. Default: off; turns the default compensation off.",
)
@click.option(
    "--compensate/--no-compensate",
    default=None,
    help="--qdq: re-solve each INT8 layer's weights and bias by least squares so that, fed its "
    "quantized input, it gives its FP32 output (measured on the data), then round them to "
    "INT8; layers kept in float keep theirs. Default: on, competing with the plain model (a "
    "model that meets the target wins, then 5 points more INT8 MACs; the second search is "
    "skipped where the first meets the target with >= 95% INT8 MACs; without protection: the "
    "one that agrees better); off with --bias-correction.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Calibrate in shards on N Ray workers (pip install 'onnx2trt_lib[ray]'); the same bytes "
    "as one process. Finished shards are kept in CACHE.shards/ until the cache is written.",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDR",
    help="Ray cluster to run --workers on (default: a local Ray started for the run).",
)
@click.option(
    "--max-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Calibrate on this many samples drawn from the data (seeded: the same ones every run).",
)
@click.option(
    "--convergence",
    is_flag=True,
    help="Report how far the thresholds moved over the last 20%% of the data.",
)
@json_option
@quiet_option
@publishes_outputs
def command(
    model: Path,
    data: str,
    output: Path,
    method: str,
    method_options: tuple[str, ...],
    batch_size: int | None,
    shapes: tuple[str, ...],
    preprocess: str | None,
    ranges_path: Path | None,
    mode: str,
    scope: str,
    trt_version: str | None,
    save_state: Path | None,
    add_states: tuple[Path, ...],
    force: bool,
    ignore_nonfinite: bool,
    plots_dir: Path | None,
    plots_top: int,
    qdq_path: Path | None,
    no_protect: bool,
    agreement: str,
    min_agreement: float | None,
    equalize: bool,
    smooth_alpha: float | None,
    bias_correction: bool | None,
    compensate: bool | None,
    workers: int | None,
    ray_address: str | None,
    max_samples: int | None,
    convergence: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Calibrate MODEL for INT8 on real data and write a TensorRT calibration cache.

    A sidecar CACHE.calib.json records the model hash, data fingerprint and settings: a re-run
    with the same inputs reuses the cache instantly (--force recomputes; --qdq without --method
    needs the histograms, so it recomputes them).
    """
    from ..calib.api import calibrate

    options = parse_method_options(method_options)
    if ray_address is not None and workers is None:
        raise UsageError("--ray-address needs --workers N")
    if workers is not None:  # before reading any data
        from .._optional import require

        require("ray", purpose="--workers")
    if plots_dir is not None:  # before calibrating, not after minutes of it
        from .._optional import require

        require("matplotlib", purpose="--plots")
        from .._io import check_output_folder

        check_output_folder(plots_dir)
    if qdq_path is not None:
        from .._io import check_output_path

        read: list[str | Path] = [model, data, *add_states]
        check_output_path(qdq_path, inputs=tuple(p for p in read if p))
        written = [p for p in (output, ranges_path, save_state) if p is not None]
        if any(qdq_path.resolve() == Path(p).resolve() for p in written) or qdq_path.name.endswith(
            ".calib.json"
        ):
            raise UsageError(
                f"--qdq {qdq_path} is also another output of this command; give it its own file"
            )
    prepared = None
    if bias_correction and qdq_path is None:
        raise UsageError("--bias-correction corrects the Q/DQ model: add --qdq OUT to write it")
    if compensate and qdq_path is None:
        raise UsageError("--compensate changes the Q/DQ model's weights: add --qdq OUT to write it")
    if compensate and bias_correction:
        raise UsageError(
            "--compensate re-solves the biases too: drop --bias-correction (or --compensate)"
        )
    if equalize or smooth_alpha is not None:
        if qdq_path is None:
            raise UsageError(
                "--equalize/--smooth-quant change the model that is calibrated: "
                "add --qdq OUT to write it (a TensorRT cache alone would not match MODEL)"
            )
        from ..quant.prepare import prepare_int8

        prepared = prepare_int8(
            model,
            data,
            equalize=equalize,
            smooth_quant=smooth_alpha if smooth_alpha is not None else False,
            preprocess=preprocess,
            shapes=list(shapes) or None,
            batch_size=batch_size,
        )
    calibrated = prepared.model if prepared is not None else model
    show_progress = not (quiet or as_json) and err_console.is_terminal
    with _Progress(show_progress) as progress:
        result = calibrate(
            calibrated,
            data,
            method=method or "entropy",
            method_options=options,
            batch_size=batch_size,
            shapes=list(shapes) or None,
            preprocess=preprocess,
            output=output,
            ranges_path=ranges_path,
            # the Q/DQ ranges are chosen from the histograms: a cache hit has none, and its
            # entropy ranges would give another model than the first run wrote
            force=force or (qdq_path is not None and method is None),
            mode=mode,
            ignore_nonfinite=ignore_nonfinite,
            scope=scope,
            trt_version=trt_version,
            save_state=save_state,
            add_states=list(add_states),
            progress=progress.update if show_progress else None,
            workers=workers,
            ray_address=ray_address,
            max_samples=max_samples,
            convergence=convergence,
            # the Q/DQ check's FP32 outputs, where it reads the rows calibration ran
            keep_outputs=qdq_path is not None and prepared is None and max_samples is None,
        )
    plots: list[Path] = []
    if plots_dir is not None:
        if result.state is None:
            raise UsageError(
                f"{output} was reused from the cache, so there are no histograms to plot: add --force"
            )
        from ..plots import save_worst_histograms

        plots = save_worst_histograms(result.state, result.amax, plots_dir, top=plots_top)
    qdq = None
    if qdq_path is not None:
        from ..quant.api import DEFAULT_BIAS_CORRECTION, quantize_calibrated

        qdq = quantize_calibrated(
            calibrated,
            result,
            data,
            preprocess=preprocess,
            shapes=list(shapes) or None,
            batch_size=batch_size,
            method=method,
            protect=not no_protect,
            agreement=agreement,
            min_agreement=min_agreement,
            reference=model if prepared is not None else None,
            bias_correction=DEFAULT_BIAS_CORRECTION if bias_correction is None else bias_correction,
            compensate=compensate,  # None: quant.api's default (off with --bias-correction)
            output=qdq_path,
        )
    if as_json:
        payload = result.to_dict()
        if qdq is not None:
            payload["qdq"] = {"path": str(qdq_path), **qdq.to_dict()}
        if prepared is not None:
            payload["prepare"] = prepared.to_dict()
        if plots_dir is not None:
            payload["plots"] = [str(p) for p in plots]
        print_json(payload)
        return
    if quiet:
        return
    if plots:
        console.print(
            f"{plots_dir}: {len(plots)} histogram plot(s) of the most clipped tensors", markup=False
        )
    if prepared is not None:
        echo_lines(prepared.summary_lines())
    if qdq is not None:
        console.print(
            f"{qdq_path}: Q/DQ model ({', '.join(f'{k}={v}' for k, v in qdq.pass_result.counts.items())})",
            markup=False,
        )
        echo_lines([*(qdq.protection.summary_lines() if qdq.protection else []), *qdq.notes])
    if result.cache_hit:
        console.print(
            f"{output}: up to date ({len(result.amax)} tensors; model, data and settings unchanged; --force recomputes)",
            markup=False,
        )
        return
    extra = f", {len(result.zero_range)} all-zero" if result.zero_range else ""
    console.print(
        f"{output}: {len(result.amax)} tensors ({result.method}, {result.mode}{extra}) from {result.num_samples} samples "
        f"in {result.num_batches} batches, {result.seconds:.1f} s [{result.header}]",
        markup=False,
    )
    if result.mode != "two-pass":
        console.print(
            f"{result.mode}: the ranges depend on the order of the data (two-pass is exact and "
            "order-independent)",
            markup=False,
        )
    if result.ranges_path:
        console.print(f"{result.ranges_path}: per-tensor ranges", markup=False)
    if result.convergence:
        c = result.convergence
        worst = next(iter(c["moved_most"]))
        console.print(
            f"convergence: from {c['samples_before']} to {c['samples_after']} samples the thresholds "
            f"moved {c['median_relative_move']:.2%} (median), {c['max_relative_move']:.2%} at most "
            f"({worst})",
            markup=False,
        )
    elif convergence:
        console.print(
            "convergence: not measured (needs 2+ batches, or 2+ shards with --workers)",
            markup=False,
        )


class _Progress:
    """A rich progress bar with ETA fed by the library's progress callback (phase, done, total)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self._bar.__enter__()
        return self

    def update(self, phase: str, done: int, total: int | None) -> None:
        if self._bar is None:
            return
        if phase not in self._tasks:
            label = {
                "range": "pass 1/2: ranges",
                "histogram": "pass 2/2: histograms",
                "collect": "collecting",
                "shards": "shards (exact, on Ray)",
            }.get(phase, phase)
            self._tasks[phase] = self._bar.add_task(label, total=total)
        self._bar.update(self._tasks[phase], completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
