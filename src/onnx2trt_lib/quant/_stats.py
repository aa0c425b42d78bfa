"""Per-batch reductions of intermediate tensors over calibration feeds, one ONNX Runtime session.

The techniques that need data (SmoothQuant's per-channel activation maxima, bias correction's
mean output shifts) reduce each batch as it comes, so no activation is kept for the whole set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import pairwise

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
    for parts in tensor_parts(model, feeds, names, workers=workers):
        yield {n: v[0] if len(v) == 1 else np.concatenate(v) for n, v in parts.items()}


def tensor_parts(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str],
    *,
    workers: int = 1,
) -> Iterator[dict[str, list[np.ndarray]]]:
    """tensor_batches without the join: name -> the feed's value as consecutive parts along
    its rows, for a reduction over rows that needs no copy of the whole (the join of 51 layer
    inputs of 32 PP-OCRv4 rec rows is 700 MB of fresh memory)."""
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
            if len(done) > 1 and not _rows_first(done, parts):
                workers, done = 1, [one(data)]  # a tensor without a row axis first: run whole
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeExecutionError(f"batch {index}: ONNX Runtime failed: {first}") from None
        yield {n: [np.asarray(d[i]) for d in done] for i, n in enumerate(names)}


def _rows_first(done: Sequence[list], parts: Sequence[Mapping[str, np.ndarray]]) -> bool:
    """Every tensor of every part has the part's rows on axis 0 and the same trailing dims (the
    parts differ in rows, so a (T, N, C) tensor whose T happens to equal one part's rows fails
    on the other)."""
    rows = [max(len(v) for v in p.values() if np.ndim(v)) for p in parts]
    return all(
        np.ndim(d[i]) >= 1 and len(d[i]) == r and np.shape(d[i])[1:] == np.shape(done[0][i])[1:]
        for d, r in zip(done, rows, strict=True)
        for i in range(len(done[0]))
    )


def _parts(feed: Mapping[str, np.ndarray], workers: int) -> list[Mapping[str, np.ndarray]]:
    """`feed` cut along its rows into `workers` parts of different sizes (as it is where the
    inputs differ in rows or the rows are fewer than two a part)."""
    rows = {len(v) for v in feed.values() if np.ndim(v)}
    if workers < 2 or len(rows) != 1:
        return [feed]
    n = rows.pop()
    if n < 2 * workers:
        return [feed]
    # parts of different sizes, so a tensor whose axis 0 is not the rows shows (_rows_first)
    cuts = [n * j // workers for j in range(workers + 1)]
    if len({b - a for a, b in pairwise(cuts)}) == 1:
        cuts[1] += 1
    return [{k: v[a:b] if np.ndim(v) else v for k, v in feed.items()} for a, b in pairwise(cuts)]


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
