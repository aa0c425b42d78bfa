"""The FP32 outputs of the first calibration rows, kept from calibration's own ONNX Runtime run.

A Q/DQ check on the same rows (quant.api.quantize_calibrated, `calibrate --qdq`) compares the
INT8 model with these outputs instead of running the FP32 model once more: on PP-OCRv4 rec,
64 words, that run was 1.3 s of a 20 s flow. Rows are matched by the bytes of their inputs, so
other data, or rows calibration did not keep, are simply not found (the check runs FP32 then,
as it does where calibration kept nothing: a cache hit, Ray workers, a graph output calibration
does not fetch).
Calibration's session exposes every tensor, which blocks most of ONNX Runtime's fusions: its
outputs equal a plain session's to float rounding (tests/calib/test_output_rows.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

KEEP_ROWS = 256  # the rows a Q/DQ check reads (quant.api.QDQ_SAMPLES is this)
KEEP_BYTES = 512 << 20  # past this the outputs are not kept (the check runs FP32 itself)


def row_count(feeds: Mapping[str, np.ndarray]) -> int | None:
    """Rows of a feed: every input's leading axis, or None where they do not share one."""
    counts = {int(np.shape(v)[0]) if np.ndim(v) else -1 for v in feeds.values()}
    if len(counts) != 1 or -1 in counts:
        return None
    return counts.pop()


def row_keys(feeds: Mapping[str, np.ndarray]) -> list[bytes] | None:
    """A digest of each row's inputs (every input's row, by name), or None where the inputs do
    not share one leading row axis."""
    rows = row_count(feeds)
    if rows is None:
        return None
    names = sorted(feeds)
    arrays = [np.ascontiguousarray(feeds[name]) for name in names]
    heads = [
        f"{n}:{a.dtype.str}:{a.shape[1:]}".encode() for n, a in zip(names, arrays, strict=True)
    ]
    keys = []
    for row in range(rows):
        digest = hashlib.blake2b(digest_size=16)
        for head, arr in zip(heads, arrays, strict=True):
            digest.update(head)
            digest.update(arr[row].tobytes())
        keys.append(digest.digest())
    return keys


class OutputRows:
    """FP32 outputs of the first `rows` rows by their inputs' digest (with `whole`, the run
    that crosses `rows` whole); `add` per run, `lookup` later."""

    def __init__(
        self,
        outputs: Sequence[str],
        model_sha256: str = "",
        rows: int = KEEP_ROWS,
        max_bytes: int = KEEP_BYTES,
        whole: bool = False,
    ) -> None:
        self.names = list(outputs)
        self.whole = whole  # a fixed batch size: the check reads whole batches
        self.model_sha256 = model_sha256
        self.rows, self.max_bytes = rows, max_bytes
        self.index: dict[bytes, tuple[int, int]] = {}  # key -> (part, row in part)
        self.parts: list[dict[str, np.ndarray]] = []
        self.kept = 0  # rows seen (repeated rows count: the check reads them as rows too)
        self.bytes = 0
        self.usable = True  # False once a run did not fit (then nothing is kept)

    def add(self, feeds: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray]) -> None:
        """Keep copies of this run's output rows until `rows` rows are seen."""
        if not self.usable or self.kept >= self.rows:
            return
        count = row_count(feeds)
        first = self.parts[0] if self.parts else None
        if count is None or any(
            n not in values
            or np.ndim(values[n]) == 0
            or len(values[n]) != count
            or (first is not None and np.shape(values[n])[1:] != first[n].shape[1:])
            for n in self.names
        ):
            self.drop()  # no row axis to match by (or rows of another length per run)
            return
        take = count if self.whole else min(count, self.rows - self.kept)
        self.kept += take
        keys = row_keys({k: v[:take] for k, v in feeds.items()})
        assert keys is not None
        new: dict[bytes, int] = {}  # a repeated row is kept once
        for row, key in enumerate(keys):
            if key not in self.index:
                new.setdefault(key, row)
        if not new:
            return
        size = sum(len(new) * values[n][0].nbytes for n in self.names)
        if self.bytes + size > self.max_bytes:
            self.drop()
            return
        part = {n: np.array(values[n][list(new.values())]) for n in self.names}  # arena reused
        self.bytes += size
        for at, key in enumerate(new):
            self.index[key] = (len(self.parts), at)
        self.parts.append(part)

    def drop(self) -> None:
        self.usable = False
        self.index, self.parts, self.bytes = {}, [], 0

    def lookup(self, batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
        """The kept outputs of `batches`, one array per batch as an FP32 run gives them; empty
        where any row is not kept."""
        if not self.usable or not self.parts:
            return {}
        found: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        for feed in batches:
            keys = row_keys(feed)
            if keys is None or any(k not in self.index for k in keys):
                return {}
            where = [self.index[k] for k in keys]
            for name in self.names:
                found[name].append(np.stack([self.parts[p][name][r] for p, r in where]))
        return found
