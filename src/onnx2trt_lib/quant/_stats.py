"""Per-batch reductions of intermediate tensors over calibration feeds, one ONNX Runtime session.

The techniques that need data (SmoothQuant's per-channel activation maxima, bias correction's
mean output shifts) reduce each batch as it comes, so no activation is kept for the whole set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from ..errors import RuntimeExecutionError
from .accuracy import session

Reduce = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def reduce_tensors(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str],
    reduce: Callable[[str, np.ndarray, np.ndarray | None], np.ndarray],
) -> dict[str, np.ndarray]:
    """name -> reduce(name, value of this batch, running result or None), folded over the feeds."""
    sess = session(model, extra_outputs=list(names))
    inputs = {i.name for i in sess.get_inputs()}
    acc: dict[str, np.ndarray | None] = dict.fromkeys(names)
    for index, feed in enumerate(feeds):
        try:
            values = sess.run(list(names), {k: v for k, v in feed.items() if k in inputs})
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeExecutionError(f"batch {index}: ONNX Runtime failed: {first}") from None
        for name, value in zip(names, values, strict=True):
            acc[name] = reduce(name, np.asarray(value), acc[name])
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
