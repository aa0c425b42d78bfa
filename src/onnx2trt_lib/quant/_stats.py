"""Per-batch reductions of intermediate tensors over calibration feeds, one ONNX Runtime session.

The techniques that need data (SmoothQuant's per-channel activation maxima, bias correction's
mean output shifts) reduce each batch as it comes, so no activation is kept for the whole set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from ..errors import RuntimeExecutionError
from .accuracy import session

Reduce = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def tensor_batches(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str],
    *,
    workers: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """name -> value of each feed, one feed at a time. `workers` > 1: a feed's rows (dynamic
    batch) run in that many parts side by side on single-threaded sessions and are joined
    again: the same values as one run of the whole feed (rows do not see each other), without
    ONNX Runtime's threads handing every op off between cores (PP-OCRv4 rec, 32 rows with 51
    layer inputs exposed: 2.0 s as one run at load 3)."""
    from ..calib._threads import ort_threads
    from .accuracy import rows_per_batch, run_pool

    workers = max(1, min(workers, ort_threads()))
    if workers > 1 and rows_per_batch(model, batch_size=0) > 0:
        workers = 1  # a fixed batch cannot be cut
    sess = session(model, extra_outputs=list(names), threads=1 if workers > 1 else None)
    inputs = {i.name for i in sess.get_inputs()}
    for index, feed in enumerate(feeds):
        data = {k: v for k, v in feed.items() if k in inputs}
        parts = _parts(data, workers)

        def one(part: Mapping[str, np.ndarray]) -> list:
            return sess.run(list(names), dict(part))

        try:
            done = list(run_pool(workers).map(one, parts)) if len(parts) > 1 else [one(data)]
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeExecutionError(f"batch {index}: ONNX Runtime failed: {first}") from None
        if len(done) == 1:
            yield {n: np.asarray(v) for n, v in zip(names, done[0], strict=True)}
        else:
            yield {n: np.concatenate([np.asarray(d[i]) for d in done]) for i, n in enumerate(names)}


def _parts(feed: Mapping[str, np.ndarray], workers: int) -> list[Mapping[str, np.ndarray]]:
    """`feed` cut along its rows into up to `workers` parts (as it is where the inputs differ in
    rows or a part would be empty)."""
    rows = {len(v) for v in feed.values() if np.ndim(v)}
    if workers < 2 or len(rows) != 1:
        return [feed]
    n = rows.pop()
    step = -(-n // workers)
    if n < 2:
        return [feed]
    return [
        {k: v[i : i + step] if np.ndim(v) else v for k, v in feed.items()}
        for i in range(0, n, step)
    ]


def reduce_tensors(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str],
    reduce: Callable[[str, np.ndarray, np.ndarray | None], np.ndarray],
    *,
    workers: int = 1,
) -> dict[str, np.ndarray]:
    """name -> reduce(name, value of this batch, running result or None), folded over the feeds."""
    acc: dict[str, np.ndarray | None] = dict.fromkeys(names)
    for values in tensor_batches(model, feeds, names, workers=workers):
        for name in names:
            acc[name] = reduce(name, values[name], acc[name])
    return {k: v for k, v in acc.items() if v is not None}


def channel_means(
    model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], axes: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Per tensor of `axes`: the mean over every other axis and every row (float64)."""
    counts: dict[str, int] = {}

    def add(name: str, value: np.ndarray, acc: np.ndarray | None) -> np.ndarray:
        moved = np.moveaxis(value.astype(np.float64), axes[name], -1)
        flat = moved.reshape(-1, moved.shape[-1])
        counts[name] = counts.get(name, 0) + len(flat)
        total = flat.sum(axis=0)
        return total if acc is None else acc + total

    sums = reduce_tensors(model, feeds, list(axes), add)
    return {n: s / counts[n] for n, s in sums.items()}
