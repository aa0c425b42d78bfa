"""`calibrate()`: data -> activations -> per-tensor amax -> TensorRT cache, ranges JSON, sidecar.

Everything that can fail on user input fails before anything is written; files are written
atomically and the sidecar last, so an interrupted run never leaves a cache that a later
run would take for a valid hit.
"""

from __future__ import annotations

import html
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .. import __version__
from .._io import (
    OutputError,
    check_output_path,
    external_data_files,
    load_model,
    output_set,
    sha256_file,
    sha256_model,
    sha256_model_file,
)
from ..errors import CalibrationError, UsageError
from .cache import (
    DEFAULT_ALGORITHM,
    DEFAULT_TRT_VERSION,
    INT8_MAX,
    CalibrationCache,
    installed_trt_version,
    parse_cache,
    trt_version_number,
    write_cache,
)
from .collect import CollectOptions, ProgressCallback, collect, resolve_mode
from .dataset import open_source, parse_shapes
from .methods import ZERO_AMAX
from .output_rows import OutputRows
from .preprocess import Preprocess, load_preprocess
from .ranges import ranges_document, write_ranges
from .sidecar import cached_bytes, make_key, sidecar_path, write_sidecar
from .state import CalibrationState

log = logging.getLogger(__name__)

METHODS = ("entropy", "max", "percentile", "mse", "ncnn-kl")


@dataclass(frozen=True)
class CalibrationResult:
    """What a calibration produced (or found in a matching cache)."""

    amax: dict[str, float]
    method: str
    mode: str | None = None
    cache_path: Path | None = None
    ranges_path: Path | None = None
    sidecar_path: Path | None = None
    state_path: Path | None = None
    cache_hit: bool = False
    num_batches: int = 0
    num_samples: int = 0
    seconds: float = 0.0
    zero_range: tuple[str, ...] = ()
    header: str = ""
    convergence: dict[str, Any] | None = None
    state: CalibrationState | None = field(default=None, repr=False, compare=False)
    # the model's outputs on the first rows (calibrate's keep_outputs; calib.output_rows)
    output_rows: OutputRows | None = field(default=None, repr=False, compare=False)

    @property
    def scales(self) -> dict[str, float]:
        return {name: value / INT8_MAX for name, value in self.amax.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "cache": str(self.cache_path) if self.cache_path else None,
            "ranges": str(self.ranges_path) if self.ranges_path else None,
            "sidecar": str(self.sidecar_path) if self.sidecar_path else None,
            "cache_hit": self.cache_hit,
            "method": self.method,
            "mode": self.mode,
            # two-pass: the same bytes for any batch size, order or split of the same samples;
            # single-pass: the first batch sets the histogram range, so the order matters
            "order_independent": self.mode == "two-pass",
            "header": self.header,
            "num_tensors": len(self.amax),
            "num_batches": self.num_batches,
            "num_samples": self.num_samples,
            "seconds": round(self.seconds, 3),
            "zero_range": list(self.zero_range),
            "convergence": self.convergence,
            "tensors": {
                name: {"amax": value, "scale": value / INT8_MAX}
                for name, value in self.amax.items()
            },
        }

    def _repr_html_(self) -> str:
        where = html.escape(str(self.cache_path)) if self.cache_path else "(not written)"
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{value:.6g}</td><td>{value / INT8_MAX:.6g}</td></tr>"
            for name, value in list(self.amax.items())[:50]
        )
        more = f"<p>... and {len(self.amax) - 50} more tensors</p>" if len(self.amax) > 50 else ""
        status = (
            "cache hit"
            if self.cache_hit
            else f"{self.num_batches} batches, {self.seconds:.2f} s, {self.mode}"
        )
        return (
            f"<div><b>Calibration</b> ({html.escape(self.method)}; {status}) &rarr; {where}"
            f"<table><thead><tr><th>tensor</th><th>amax</th><th>scale</th></tr></thead><tbody>{rows}</tbody></table>{more}</div>"
        )


def calibrate(
    model: str | os.PathLike | onnx.ModelProto,
    data: Any,
    *,
    method: str = "entropy",
    method_options: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    shapes: str | Sequence[str] | Mapping[str, Sequence[int]] | None = None,
    preprocess: str | os.PathLike | Mapping[str, Any] | Preprocess | None = None,
    output: str | os.PathLike | None = None,
    ranges_path: str | os.PathLike | None = None,
    force: bool = False,
    mode: str = "auto",
    ignore_nonfinite: bool = False,
    num_bins: int = 2048,
    include_inputs: bool = True,
    tensors: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    trt_version: str | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
    save_state: str | os.PathLike | None = None,
    add_states: Sequence[str | os.PathLike] = (),
    ort_optimization: str = "all",
    scope: str = "all",
    overlap: bool = False,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    max_samples: int | None = None,
    sample_seed: int = 0,
    convergence: bool = False,
    keep_outputs: bool = False,
) -> CalibrationResult:
    """Calibrate `model` on `data` and write a TensorRT cache to `output` (when given).

    `data`: image list/folder/glob, .npy/.npz, a dict of arrays or an iterable of
    {input: batch} dicts (see calib.dataset). With `output`, a matching sidecar makes the
    call a cache hit unless `force`. `scope="qdq"` calibrates only the activations a Q/DQ model
    (TensorRT 11) needs, several times faster than every tensor (`"all"`, what TensorRT <= 10 reads).
    `workers`: run the exact mode in shards on that many Ray workers (a local Ray for the run, or
    the cluster at `ray_address`); the result is the same bytes as one process (calib.distributed).
    `max_samples`: a seeded (`sample_seed`) subset of that many samples. `convergence`: also report
    how far each threshold moved over the last fifth of the data (`CalibrationResult.convergence`).
    `keep_outputs`: keep the model's outputs on the first rows (calib.output_rows: 256 rows, whole
    batches for a fixed batch size, at most 512 MiB, held by the result), so `quant.quantize_calibrated` on the same data needs
    no FP32 run of its own (`calibrate --qdq` does this).
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise UsageError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if batch_size is not None and batch_size <= 0:
        raise UsageError(f"batch size {batch_size} must be positive")
    if workers is not None and (
        isinstance(workers, bool) or int(workers) != workers or workers < 1
    ):
        raise UsageError(f"workers {workers!r} must be a positive integer")
    # every file read (model and its external data, data, states) is an input that an output must
    # never overwrite; the image files of a list/folder are checked once the source is open
    inputs = tuple(p for p in (model, data, *add_states) if isinstance(p, (str, os.PathLike)))
    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        inputs += tuple(external_data_files(model))
    outputs = [Path(p) for p in (output, ranges_path, save_state) if p is not None]
    for path in outputs:
        check_output_path(path, inputs=inputs)
    seen: dict[Path, Path] = {}
    for path in [*outputs, *([sidecar_path(output)] if output is not None else [])]:
        if path.resolve() in seen:
            raise UsageError(
                f"{seen[path.resolve()]} and {path} are the same file; "
                "the cache, its sidecar, ranges and state outputs must be different files"
            )
        seen[path.resolve()] = path
    method_options = dict(method_options or {})
    _check_method_options(method, method_options, num_bins)
    shape_map = parse_shapes(shapes)
    pre = load_preprocess(preprocess)
    model_proto = load_model(model, check=False)
    model_hash = (
        sha256_model_file(model)
        if isinstance(model, (str, os.PathLike))
        else sha256_model(model_proto)
    )
    source = open_source(data, preprocess=pre)
    if max_samples is not None:
        from .dataset import subsample

        source = subsample(source, max_samples, seed=sample_seed)
    targets = {path.resolve(): path for path in outputs}  # not a dict per image: lists run to 100k+
    for image in getattr(source, "paths", ()) if targets else ():
        if image.resolve() in targets:
            raise OutputError(
                f"output {targets[image.resolve()]} is the calibration image {image}; inputs are never overwritten"
            )
    resolved_mode = resolve_mode(mode, method=method)
    version = trt_version_number(trt_version or installed_trt_version() or DEFAULT_TRT_VERSION)
    state_hashes = [sha256_file(p) for p in add_states]

    key = make_key(
        model_sha256=model_hash,
        data_fingerprint=source.fingerprint(),
        preprocess=pre.to_dict() if pre else None,
        method=method,
        method_options=method_options,
        shapes=shape_map,
        batch_size=batch_size,
        settings={
            "mode": resolved_mode,
            "num_bins": num_bins,
            "ignore_nonfinite": ignore_nonfinite,
            "include_inputs": include_inputs,
            "tensors": list(tensors) if tensors is not None else None,
            "exclude": list(exclude),
            "header": f"TRT-{version}-{algorithm}",
            "add_states": state_hashes,
            "ort_optimization": ort_optimization,
            "scope": scope,
        },
        library_version=__version__,
    )
    side_outputs = {
        role: p for role, p in (("ranges", ranges_path), ("state", save_state)) if p is not None
    }
    if output is not None and not force:
        hit = cached_bytes(output, key, side_outputs=side_outputs)
        if hit is not None:
            cache = parse_cache(hit, source=str(output))  # the very bytes the sidecar matched
            log.info(
                "%s matches the model, data and settings: reused (use --force to recompute)", output
            )
            return CalibrationResult(
                amax=cache.amax,
                method=method,
                mode=resolved_mode,
                cache_path=Path(output),
                ranges_path=Path(ranges_path) if ranges_path else None,
                sidecar_path=sidecar_path(output),
                state_path=Path(save_state) if save_state else None,
                cache_hit=True,
                seconds=time.perf_counter() - started,
                header=cache.header,
            )

    options = CollectOptions(
        mode=resolved_mode,
        num_bins=num_bins,
        ignore_nonfinite=ignore_nonfinite,
        include_inputs=include_inputs,
        tensors=tuple(tensors) if tensors is not None else None,
        exclude=tuple(exclude),
        ort_optimization=ort_optimization,
        scope=scope,
        overlap=overlap,
        count_zeros=method == "ncnn-kl",
        snapshot=0.8 if convergence else None,
        keep_outputs=keep_outputs,
    )
    previous = [CalibrationState.load(p) for p in add_states]
    # exact states merge with a two-pass run as they are; others: start at their ranges (exact merge)
    exact = resolved_mode == "two-pass" and all(saved.exact for saved in previous)
    initial = previous[0].ranges() if previous and not exact else None
    if workers is not None:
        from .distributed import checkpoint_folder, collect_on_ray

        if initial is not None:
            raise UsageError("--workers merges only exact (two-pass) states from --add-state")
        state = collect_on_ray(
            model_proto,
            source,
            preprocess=pre,
            shapes=shape_map,
            batch_size=batch_size,
            method=method,
            options=options,
            workers=int(workers),
            key=key,
            checkpoints=checkpoint_folder(output) if output is not None else None,
            address=ray_address,
            progress=progress,
        )
    else:
        state = collect(
            model_proto,
            source,
            shapes=shape_map,
            batch_size=batch_size,
            method=method,
            options=options,
            progress=progress,
            initial_ranges=initial,
        )
    partial, output_rows = state.partial, state.outputs
    if output_rows is not None:
        output_rows.model_sha256 = model_hash
    for state_file, saved in zip(add_states, previous, strict=True):
        if set(saved.histograms) != set(state.histograms):
            differ = sorted(set(saved.histograms) ^ set(state.histograms))
            raise CalibrationError(
                f"saved state {state_file} has different tensors than this model (e.g. {differ[0]!r}); "
                "it was collected for another model or with other tensor options"
            )
        state = state.merge(saved)
        partial = partial.merge(saved) if partial is not None else None
    try:
        computed = state.compute_amax(method, **method_options)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"method {method!r} options {method_options}: {exc}") from None
    amax, zero = _finalize(computed, state)
    report = None
    if convergence and partial is not None:
        from .convergence import convergence_report

        report = convergence_report(amax, partial, state.num_samples, method, method_options)
    cache = CalibrationCache.from_amax(amax, version=version, algorithm=algorithm)

    written_sidecar = None
    with output_set():  # state, ranges, cache and sidecar: all published, or none
        if save_state is not None:
            state.save(save_state)
        if ranges_path is not None:
            write_ranges(
                ranges_path,
                ranges_document(
                    amax,
                    method=method,
                    method_options=method_options,
                    histograms=state.histograms,
                    mode=state.mode,
                ),
            )
        if output is not None:
            write_cache(output, cache)
            written_sidecar = write_sidecar(
                output,
                key,
                extra={"header": cache.header, "num_tensors": len(amax)},
                side_outputs=side_outputs,
            )
    if output is not None and workers is not None:  # the cache holds every shard now
        from .distributed import checkpoint_folder, remove_checkpoints

        remove_checkpoints(checkpoint_folder(output))
    return CalibrationResult(
        amax=amax,
        method=method,
        mode=state.mode,
        cache_path=Path(output) if output else None,
        ranges_path=Path(ranges_path) if ranges_path else None,
        sidecar_path=written_sidecar,
        state_path=Path(save_state) if save_state else None,
        cache_hit=False,
        num_batches=state.num_batches,
        num_samples=state.num_samples,
        seconds=time.perf_counter() - started,
        zero_range=tuple(zero),
        header=cache.header,
        state=state,
        convergence=report,
        output_rows=output_rows,
    )


def _check_method_options(method: str, options: Mapping[str, Any], num_bins: int) -> None:
    """Bad method options fail now, in a second, not after every batch has been collected."""
    from .histogram import Histogram

    probe = Histogram(num_bins, count_zeros=True)
    probe.update(np.linspace(0.0, 1.0, 4 * num_bins + 1))
    try:
        probe.compute_amax(method, **dict(options))
    except (TypeError, ValueError, OverflowError, CalibrationError) as exc:
        raise UsageError(f"method {method!r} options {dict(options)}: {exc}") from None


def _finalize(
    computed: Mapping[str, float], state: CalibrationState
) -> tuple[dict[str, float], list[str]]:
    """Refuse non-finite or zero ranges; list all-zero tensors (the engine gives them amax ZERO_AMAX).

    A range so small that its float32 scale (amax / 127) rounds to 0 (max |x| below ~9e-44) is
    written as ZERO_AMAX too: every such value quantizes to 0 either way, and a cache never
    holds a zero scale.
    """
    amax: dict[str, float] = {}
    zero = [name for name, hist in state.histograms.items() if hist.amax_seen == 0]
    for name, value in computed.items():
        if not math.isfinite(value) or value <= 0:
            raise CalibrationError(
                f"tensor {name!r}: computed range {value} is not a finite positive number"
            )
        if np.float32(value / INT8_MAX) == 0:
            value = ZERO_AMAX
            zero.append(name)
        amax[name] = value
    if zero:
        log.warning(
            "%d tensor(s) were all zero on the calibration data (e.g. %s): written with amax %g",
            len(zero),
            zero[0],
            amax[zero[0]],
        )
    return amax, zero
