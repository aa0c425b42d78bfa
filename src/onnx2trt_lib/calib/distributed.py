"""Exact calibration over shards of the data on Ray, with per-shard checkpoints.

Each shard is one Ray task: its own ONNX Runtime session runs the exact (two-pass) collection
over the shard (integer histograms over the power-of-two range of the shard's max, in one read),
so memory is bounded by one batch per worker. Exact states of any parts of the data merge into
exactly the state of all of it (calib/histogram.pow2_ceil), so the merged result is the same
bytes as one process, whatever the number of workers or shards, and no worker waits for another.

Each finished shard's state is written by the driver into a folder beside the output
(`CACHE.shards/`), named after the run's settings and the shard, so:
- a worker killed mid-shard: Ray runs the task again (task retries); nothing of it was kept;
- a run interrupted (Ctrl-C, a killed driver): the next run with the same model, data and
  settings loads the finished shards and runs only the others;
- a checkpoint that does not load or does not match its shard is computed again, with a warning.
The cache is written only after every shard is merged: never from part of the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from .._io import published_now
from ..errors import CalibrationError, UsageError
from .collect import CollectOptions, collect
from .dataset import ArraySource, ImageSource
from .state import CalibrationState
from .tensors import model_inputs

log = logging.getLogger(__name__)

# samples per shard: the unit of retry and of resume (a shard also pays one ORT session start)
SHARD_SIZE = 1024
# how often Ray runs a shard again after its worker died
TASK_RETRIES = 3

ShardProgress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class _Shard:
    index: int
    start: int
    stop: int
    name: str  # checkpoint file name: settings and shard bounds, hashed


def checkpoint_folder(output: str | os.PathLike) -> Path:
    """Where the shard states of a run writing `output` are kept until the cache is written."""
    output = Path(output)
    return output.with_name(output.name + ".shards")


def plan_shards(
    num_samples: int, workers: int, key: Mapping[str, Any], unit: int = 1
) -> list[_Shard]:
    """Contiguous shards of at most SHARD_SIZE samples, at least one per worker (when samples allow).

    `unit`: a model's fixed batch; shards start at multiples of it, so they drop exactly the
    samples one process drops (those after the last full batch).
    """
    units = max(1, num_samples // unit)
    count = max(min(workers, units), math.ceil(units * unit / SHARD_SIZE), 1)
    edges = [units * i // count * unit for i in range(count)] + [num_samples]
    run = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return [
        _Shard(i, edges[i], edges[i + 1], f"{run}-{edges[i]:09d}-{edges[i + 1]:09d}.npz")
        for i in range(count)
        if edges[i + 1] > edges[i]
    ]


def _num_samples(source: Any) -> int:
    if isinstance(source, ImageSource):
        return len(source.paths)
    arrays = {"": source.arrays} if not isinstance(source.arrays, Mapping) else source.arrays
    return min(len(a) for a in arrays.values())


def _slice(source: Any, start: int, stop: int) -> Any:
    if isinstance(source, ImageSource):
        return ("images", [str(p) for p in source.paths[start:stop]], source.origin)
    if isinstance(source.arrays, Mapping):
        return ("arrays", {k: v[start:stop] for k, v in source.arrays.items()}, source.origin)
    return ("arrays", source.arrays[start:stop], source.origin)


def _shard_source(spec: tuple, preprocess: Any) -> Any:
    kind, payload, origin = spec
    if kind == "images":
        return ImageSource([Path(p) for p in payload], origin=origin, preprocess=preprocess)
    return ArraySource(payload, origin=origin, digest="shard")


def _calibrate_shard(
    model_bytes: bytes,
    spec: tuple,
    preprocess: Any,
    shapes: Mapping[str, Sequence[int]],
    batch_size: int | None,
    method: str,
    options: CollectOptions,
) -> CalibrationState:
    """One shard, in a Ray worker: exact two-pass collection on the CPUs Ray gave this task."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    os.environ["ONNX2TRT_CALIB_THREADS"] = str(max(1, int(cpus)))
    model = onnx.ModelProto.FromString(model_bytes)
    return collect(
        model,
        _shard_source(spec, preprocess),
        shapes=shapes,
        batch_size=batch_size,
        method=method,
        options=options,
    )


def _load_checkpoint(path: Path, shard: _Shard, unit: int) -> CalibrationState | None:
    """A finished shard's state, or None (with a warning) when it is unusable."""
    if not path.is_file():
        return None
    try:
        state = CalibrationState.load(path)
    except CalibrationError as exc:
        log.warning("%s; computing that shard again", exc)
        return None
    expected = (shard.stop - shard.start) // unit * unit
    if not state.exact or state.num_samples != expected:
        log.warning(
            "calibration state %s does not hold shard %d's %d samples exactly; computing it again",
            path,
            shard.index,
            expected,
        )
        return None
    return state


def _connect(workers: int, address: str | None) -> tuple[Any, Callable[[], None]]:
    """ray, and how to let it go: a local Ray started for this run is stopped after it."""
    from .._optional import ray as import_ray

    ray = import_ray()
    if ray.is_initialized():
        return ray, lambda: None
    if address:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CalibrationError(f"cannot connect to Ray at {address}: {first}") from None
        return ray, ray.shutdown
    temp = tempfile.mkdtemp(prefix="onnx2trt-ray-")
    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=temp,
    )

    def stop() -> None:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)

    return ray, stop


def collect_on_ray(
    model: onnx.ModelProto,
    source: Any,
    *,
    preprocess: Any,
    shapes: Mapping[str, Sequence[int]],
    batch_size: int | None,
    method: str,
    options: CollectOptions,
    workers: int,
    key: Mapping[str, Any],
    checkpoints: Path | None,
    address: str | None = None,
    progress: ShardProgress | None = None,
) -> CalibrationState:
    """The exact state of `source` computed in shards by `workers` Ray tasks at a time.

    `checkpoints`: the folder for finished shard states (None: a temporary one, no resume).
    """
    if not isinstance(source, (ImageSource, ArraySource)):
        raise UsageError(
            "--workers needs data that can be split: an image list, folder or glob, or arrays "
            f"(.npy/.npz); {source.describe()} cannot"
        )
    if options.mode != "two-pass":
        raise UsageError(
            f"--workers runs the exact two-pass mode; {options.mode} cannot be split over workers"
        )
    fixed = [spec.dims[0] for spec in model_inputs(model) if spec.dims and spec.dims[0]]
    unit = int(fixed[0]) if fixed else 1  # a fixed batch: shards of whole batches
    shards = plan_shards(_num_samples(source), workers, key, unit)
    temporary = checkpoints is None
    folder = (
        checkpoints
        if checkpoints is not None
        else Path(tempfile.mkdtemp(prefix="onnx2trt-shards-"))
    )
    folder.mkdir(parents=True, exist_ok=True)
    merged: CalibrationState | None = None
    done = 0
    # the convergence report's early state: the shards that hold the first `snapshot` of the data
    # (whole shards, at least one, never all), merged as they arrive; the workers keep no copies
    cut = _snapshot_shards(shards, options.snapshot)
    early: CalibrationState | None = None
    # a shard keeps no outputs: the driver's merge would drop them after Ray shipped them
    options = dataclasses.replace(options, snapshot=None, keep_outputs=False)

    def add(state: CalibrationState, shard: _Shard) -> None:
        nonlocal merged, done, early
        merged = state if merged is None else merged.merge(state)
        if shard.index < cut:
            early = state if early is None else early.merge(state)
        done += 1
        if progress is not None:
            progress("shards", done, len(shards))

    todo = []
    for shard in shards:
        state = _load_checkpoint(folder / shard.name, shard, unit)
        if state is None:
            todo.append(shard)
        else:
            add(state, shard)
    if done:
        log.info("resumed %d of %d shards from %s", done, len(shards), folder)
    if todo:
        ray, release = _connect(workers, address)
        try:
            task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_calibrate_shard)
            model_ref = ray.put(model.SerializeToString())
            pending: dict[Any, _Shard] = {}
            queue = list(todo)

            def submit() -> None:
                while queue and len(pending) < 2 * workers:  # bounded: a few shards in flight
                    shard = queue.pop(0)
                    spec = _slice(source, shard.start, shard.stop)
                    ref = task.remote(
                        model_ref, spec, preprocess, dict(shapes), batch_size, method, options
                    )
                    pending[ref] = shard

            try:
                submit()
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    shard = pending.pop(ready[0])
                    state = _get(ray, ready[0], shard)
                    with published_now():  # a checkpoint outlives a failed run
                        state.save(folder / shard.name)
                    add(state, shard)
                    submit()
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
        finally:
            release()
    assert merged is not None
    if temporary:
        shutil.rmtree(folder, ignore_errors=True)
    if early is not None:  # at the final ranges, as one process's snapshot (collect module notes)
        grown = {}
        for name, hist in early.histograms.items():
            grown[name] = hist.copy()  # a shard's own state may be this object: leave it be
            grown[name].grow_to(merged.histograms[name].range_max)
            grown[name].fixed = merged.histograms[name].fixed
        merged.partial = CalibrationState(
            grown, early.mode, early.num_batches, early.num_samples, early.sources
        )
    return merged


def _snapshot_shards(shards: Sequence[_Shard], fraction: float | None) -> int:
    """How many leading shards make the convergence report's early state (0: no report).

    The count whose samples come nearest `fraction` of the data, at least one shard and never
    all of them: a single shard gives no report."""
    if fraction is None or len(shards) < 2:
        return 0
    target = fraction * shards[-1].stop
    return min(range(1, len(shards)), key=lambda k: (abs(shards[k - 1].stop - target), -k))


def _get(ray: Any, ref: Any, shard: _Shard) -> CalibrationState:
    """A shard's state; a library error inside the task comes back as that one-line error."""
    try:
        return ray.get(ref)
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (CalibrationError, UsageError)):
            raise type(cause)(str(cause)) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CalibrationError(
            f"shard {shard.index} (samples {shard.start}..{shard.stop - 1}) failed on Ray: {first}"
        ) from None


def remove_checkpoints(folder: Path) -> None:
    """After the cache is written: the shard states are no longer needed."""
    shutil.rmtree(folder, ignore_errors=True)
