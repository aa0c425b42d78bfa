"""Rows that read differently before run first: a failing top-1 evaluation stops sooner.

Protection asks dozens of times whether a mix of INT8 and float layers reads the search rows as
FP32 does. A passing answer has to run every row; a failing one stops at the run where the
differing rows exceed what the target allows. A row that differed under an earlier mix is the
likely one to differ again, so those rows run first, a few at a time, then the others from the
smallest gap between FP32's two highest scores up (the rows closest to reading differently), in
runs that grow to `rows_per_run`. Each row's output does not depend on the rows beside it, so the
answer is the same (a pass still runs every row), but a failing one often costs a run of a few
rows instead of the first `rows_per_run` of the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

SUSPECT_ROWS = 2  # rows per run while the suspects run


class RowOrder:
    """The search rows joined along axis 0, run suspects first; `failed` moves rows to the front."""

    def __init__(
        self,
        batches: Sequence[Mapping[str, np.ndarray]],
        rows_per_run: int,
        risk: np.ndarray | None = None,
    ) -> None:
        first = batches[0]
        self.rows = {
            k: np.concatenate([b[k] for b in batches]) if np.ndim(v) else v
            for k, v in first.items()
        }
        self.count = max((len(v) for v in self.rows.values() if np.ndim(v)), default=1)
        self.rows_per_run = rows_per_run
        # the rest of the rows, most at risk first (`risk` low: FP32's top-2 gap, say)
        self.by_risk = (
            np.argsort(risk, kind="stable").tolist()
            if risk is not None
            else list(range(self.count))
        )
        self.suspects: list[int] = []  # most recent failure first

    def runs(self) -> list[np.ndarray]:
        """Row indices per run: the suspects SUSPECT_ROWS at a time, then the rest by risk in
        runs of SUSPECT_ROWS, doubling up to `rows_per_run`."""
        known = set(self.suspects)
        rest = [i for i in self.by_risk if i not in known]
        out = [
            np.asarray(self.suspects[i : i + SUSPECT_ROWS])
            for i in range(0, len(self.suspects), SUSPECT_ROWS)
        ]
        start, size = 0, SUSPECT_ROWS
        while start < len(rest):
            out.append(np.asarray(rest[start : start + size]))
            start, size = start + size, min(2 * size, max(self.rows_per_run, SUSPECT_ROWS))
        return out

    def feed(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[rows] if np.ndim(v) else v for k, v in self.rows.items()}

    def failed(self, rows: Iterable[int]) -> None:
        """These rows read differently under the last mix: they run first from now on."""
        new = [int(r) for r in rows]
        if new:
            seen = set(new)
            self.suspects = new + [r for r in self.suspects if r not in seen]
