"""Label-free agreement of a quantized model with FP32, on what the output is used for.

Output SQNR is a poor proxy on its own: a CTC recognizer keeps 20 dB and loses words, a YOLO head
mixes boxes (0-640) with class scores (0-1) so the scores' error hides under the boxes' power.
So besides SQNR the agreement is measured the way the output is read:

* ``top1``: classifiers (N, C) and CTC sequences (N, T, C): the share of rows whose arg-max
  class, or greedy CTC reading (repeats merged, blank 0 dropped), is FP32's. A position where
  INT8 picks a class FP32 gave nearly as much probability as its own pick (within TIE_GAP,
  where the model writes probabilities itself: softmax classifiers, CTC heads; not logits)
  reads as FP32's: FP32 was torn between the two there, and such a flip costs at most TIE_GAP
  of a row by FP32's own belief. (On PP-OCRv4 rec two calibration words whose
  FP32 top-2 gaps were 0.016 and 0.001 read differently under every INT8 mix of up to 13 float
  layers, and INT8 read the true word on both: requiring them kept 41 of 51 layers float;
  benchmarks/results/quant.md, "leave one out and repair".) The default share is 99% of rows
  for classes and 90% for CTC sequences ((N, T, C) probabilities), whose rows are whole readings (PP-OCRv4 rec: with 99%,
  no word of 32 may change, and the search floated layers that fitted its 32 words: 3 of 6
  fresh calibration sets read 2-5 points below FP32 on the test words; with 90% all 12 sets
  read within 1 point at 98.6-100% INT8 MACs; benchmarks/results/quant.md, "rec-share").
* ``accuracy``: classifiers and CTC sequences again, but the expected change of accuracy
  rather than agreement: FP32's own posterior stands in for the unknown truth, and each row
  adds P_fp32(INT8's reading) - P_fp32(FP32's reading); the score is 1 + the mean over rows
  (1 = no expected loss; 0.99 = a point lost). A row that INT8 reads differently costs
  what FP32 believed in its own reading: nearly nothing where FP32 was torn between the two,
  a whole row where it was sure. Classes: the probabilities are the rows when they are
  distributions, else the softmax of the logits. CTC: P(reading) is the probability of the
  label sequence summed over all its alignments (the CTC forward algorithm, blank 0). With a
  calibrated FP32 the estimate is unbiased; an over-confident FP32 makes it conservative,
  and an FP32 with flat posteriors says any change costs little (use it only where
  the model writes probabilities itself). It cannot see the rows INT8 happens to read better
  than FP32: on PP-OCRv4 rec full INT8 is estimated at -7.4 points and measures -1.0 on 200
  words (FP32's misread words that INT8 reads right get 0.1-0.4 of FP32's belief);
* ``boxes``: YOLOv5/v8-style heads (N, 4 + classes, anchors): boxes above a score of 0.25 after
  per-class NMS (IoU 0.45), matched to FP32's with the same class at IoU >= 0.5; the F-score of
  the matches (1 when both find nothing);
* ``mask``: probability maps (N, 1, H, W) or (N, H, W), e.g. DB text detectors (PP-OCR det,
  DBNet): each row's map is binarised at MASK_THRESHOLD (0.3, PaddleOCR's and rapidocr's
  ``thresh``, where their post-process cuts it) and compared with FP32's by intersection over
  union (1 when both are empty); the mean over rows. Pixel IoU rather than the F-score of the
  text boxes the map yields: on PP-OCRv4 det the calibration scenes hold a few dozen boxes, so a
  box F-score moves in steps of 1-2 points and the search fits them (box F >= 0.98 on the
  calibration scenes gave 0.964 on test scenes, IoU >= 0.98 gave 0.986; at 0.99 0.988 vs 0.992:
  benchmarks/results/quant.md);
* ``sqnr``: 10 log10(signal / noise) in dB, the minimum over the float outputs.

``auto`` picks from the FP32 outputs: (N, C) scores and (N, T, C) rows that are probability
distributions on the last axis -> top1 (``accuracy`` is opt-in: on PP-OCRv4 rec it kept 89% of
MACs INT8 instead of 37% on one machine, but on another its 32-row search halves let the written
model read 1.7-3.7 points below FP32 where top1 stayed within 1; benchmarks/results/quant.md);
(N, 4 + C, A) with A > 4 + C and not a distribution -> boxes; a
single-channel map (N, 1, H, W), or (N, H, W) that is not box-shaped, with every value in
[0, 1] and H, W >= 8 -> mask; anything else (embeddings, multi-channel maps, several kinds at
once) -> sqnr.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .accuracy import sqnr_db

KINDS = ("auto", "sqnr", "top1", "accuracy", "boxes", "mask")
DEFAULT_MIN_SQNR_DB = 20.0
DEFAULT_MIN_AGREEMENT = 0.99
# top1 on CTC sequences (N, T, C): a row is a whole reading, which one character changed fails
DEFAULT_MIN_SEQUENCE_AGREEMENT = 0.90
DEFAULT_ACCURACY_BUDGET = 0.01  # accuracy: at most a point of expected loss (benchmarks: quant.md)
SCORE_THRESHOLD = 0.25
NMS_IOU = 0.45
MATCH_IOU = 0.5
MASK_THRESHOLD = 0.3  # DB's binarisation threshold (PaddleOCR / rapidocr det ``thresh``)
MASK_MIN_HW = 8  # auto: smaller maps are not read as images
# top1: INT8's pick within this much of FP32's probability for its own pick reads as FP32's
TIE_GAP = 0.05


@dataclass(frozen=True)
class Criterion:
    """When a quantized model is close enough to FP32, label-free.

    `agreement` is one of KINDS; SQNR must reach `min_sqnr_db`, top1, boxes and mask
    `min_agreement` (a share in [0, 1]; None: DEFAULT_MIN_AGREEMENT, for top1 where every
    output is a CTC-style sequence of probabilities DEFAULT_MIN_SEQUENCE_AGREEMENT), accuracy
    `min_agreement`
    as 1 + the expected accuracy change (None: 1 - DEFAULT_ACCURACY_BUDGET).
    """

    min_sqnr_db: float = DEFAULT_MIN_SQNR_DB
    agreement: str = "auto"
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        if self.agreement not in KINDS:
            raise UsageError(f"agreement {self.agreement!r} is not one of {', '.join(KINDS)}")
        if not math.isfinite(self.min_sqnr_db):
            raise UsageError(
                f"the SQNR bound must be a finite number of dB, got {self.min_sqnr_db}"
            )
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise UsageError(f"the agreement bound must be in [0, 1], got {self.min_agreement}")

    def describe(self) -> str:  # before the kind is resolved
        return f"{self.agreement} agreement with FP32"


def pick_kind(ref: Mapping[str, np.ndarray]) -> str:
    """The agreement `auto` means for these FP32 outputs (name -> all rows, batch first)."""
    kinds = {_kind_of(np.asarray(v)) for v in ref.values()}
    return kinds.pop() if len(kinds) == 1 else "sqnr"


def _kind_of(a: np.ndarray) -> str:
    if a.ndim == 2 and a.shape[1] >= 2:
        return "top1"
    if a.ndim == 3 and a.shape[2] >= 2:
        if _is_distribution(a):
            return "top1"
        if 5 <= a.shape[1] < a.shape[2]:
            return "boxes"
    if _is_map(a):
        return "mask"
    return "sqnr"


def _is_distribution(a: np.ndarray) -> bool:
    """Every row of the last axis is a probability distribution (the model's own softmax)."""
    return bool(
        a.size and np.all(a >= 0) and np.allclose(a.sum(axis=-1, dtype=np.float64), 1.0, atol=1e-3)
    )


def _is_sequence(a: np.ndarray) -> bool:
    """(N, T, C) with T, C >= 2: with the model's own probabilities a CTC-style reading per row
    (not (N, 1, C) classes, nor a sequence-first output joined into rows of one position)."""
    return a.ndim == 3 and min(a.shape[1:]) >= 2


def _is_map(a: np.ndarray) -> bool:
    """A single-channel probability map: (N, 1, H, W) or (N, H, W), values in [0, 1]."""
    if not (a.ndim == 4 and a.shape[1] == 1) and a.ndim != 3:
        return False
    if min(a.shape[-2:]) < MASK_MIN_HW or not a.size:
        return False
    return bool(np.all((a >= 0) & (a <= 1)))


class Judge:
    """Scores candidate outputs against the FP32 reference with one agreement kind."""

    def __init__(self, ref: Mapping[str, np.ndarray], criterion: Criterion) -> None:
        self.kind = pick_kind(ref) if criterion.agreement == "auto" else criterion.agreement
        if self.kind == "boxes":
            bad = [n for n, v in ref.items() if v.ndim != 3 or v.shape[1] < 5]
            if bad:
                raise UsageError(
                    f"--agreement boxes needs (N, 4 + classes, anchors) outputs; {bad[0]!r} is "
                    f"{'x'.join(map(str, ref[bad[0]].shape))}"
                )
        if self.kind == "mask":
            bad = [
                n for n, v in ref.items() if not (v.ndim == 3 or (v.ndim == 4 and v.shape[1] == 1))
            ]
            if bad:
                raise UsageError(
                    f"--agreement mask needs (N, 1, H, W) or (N, H, W) probability maps; {bad[0]!r} is "
                    f"{'x'.join(map(str, ref[bad[0]].shape))}"
                )
        if self.kind == "top1":
            bad = [n for n, v in ref.items() if v.ndim < 2]
            if bad:
                raise UsageError(
                    f"--agreement top1 needs (N, C) or (N, T, C) outputs; {bad[0]!r} is not"
                )
        if self.kind == "accuracy":
            bad = [n for n, v in ref.items() if v.ndim not in (2, 3) or v.shape[-1] < 2]
            if bad:
                raise UsageError(
                    f"--agreement accuracy needs (N, C) class scores or (N, T, C) CTC outputs; "
                    f"{bad[0]!r} is {'x'.join(map(str, ref[bad[0]].shape))}"
                )
        self.ref = dict(ref)
        # top1: outputs that are the model's own probabilities (checked once: a pass over
        # every value), where a near tie is forgiven and a CTC row is a whole reading
        probs = {n: self.kind == "top1" and _is_distribution(v) for n, v in self.ref.items()}
        if self.kind == "sqnr":
            self.target = criterion.min_sqnr_db
        elif criterion.min_agreement is not None:
            self.target = criterion.min_agreement
        elif self.kind == "accuracy":
            self.target = 1.0 - DEFAULT_ACCURACY_BUDGET
        elif self.kind == "top1" and all(probs[n] and _is_sequence(v) for n, v in self.ref.items()):
            self.target = DEFAULT_MIN_SEQUENCE_AGREEMENT
        else:
            self.target = DEFAULT_MIN_AGREEMENT
        self._posterior = (
            {n: Posterior(v) for n, v in self.ref.items()} if self.kind == "accuracy" else {}
        )
        self._ref_boxes = (
            {n: detections(v) for n, v in self.ref.items()} if self.kind == "boxes" else {}
        )
        self._tie_gap = {n: TIE_GAP if probs[n] else None for n in self.ref}
        self._ties = {n: _close_top2(self.ref[n], g) for n, g in self._tie_gap.items() if g}

    @property
    def tie_gaps(self) -> dict[str, float | None]:
        """top1: per output, the FP32 probability gap within which a pick reads as FP32's
        (None: not probabilities)."""
        return dict(self._tie_gap)

    @property
    def unit(self) -> str:
        return "dB" if self.kind == "sqnr" else ""

    def describe(self) -> str:
        what = {
            "sqnr": f"every output's SQNR vs FP32 >= {self.target:g} dB",
            "top1": f"top-1 agreement with FP32 (class, or CTC reading{self._tie_text()}) >= "
            f"{self.target:.1%} of rows",
            "accuracy": "expected accuracy change vs FP32 (FP32's posterior as the truth) >= "
            f"{points(self.target)}",
            "boxes": f"box agreement with FP32 (F-score, same class, IoU >= {MATCH_IOU}) >= {self.target:.1%}",
            "mask": f"map agreement with FP32 (mean IoU of the map > {MASK_THRESHOLD:g}) >= {self.target:.1%}",
        }[self.kind]
        return f"{what} on the held-out data"

    def _tie_text(self) -> str:
        if not any(g is not None for g in self._tie_gap.values()):
            return ""
        return f"; a class within {TIE_GAP:g} of FP32's probability for its own counts as FP32's"

    def format(self, value: float) -> str:
        if self.kind == "accuracy":
            return points(value)
        return f"{value:.2f} dB" if self.kind == "sqnr" else f"{value:.2%}"

    def score(self, out: Mapping[str, np.ndarray]) -> float:
        """The worst output's agreement (NaN in a candidate counts as the worst possible)."""
        values = []
        for name, ref in self.ref.items():
            test = out[name]
            if self.kind == "sqnr":
                v = sqnr_db(ref, test)
            elif self.kind == "top1":
                v = top1_agreement(ref, test, self._tie_gap[name])
            elif self.kind == "accuracy":
                v = 1.0 + self._posterior[name].gains(test).sum() / max(len(ref), 1)
            elif self.kind == "mask":
                v = mask_agreement(ref, test)
            else:
                v = box_agreement(self.ref_boxes[name], detections(test))
            values.append(-math.inf if math.isnan(v) else v)
        return min(values)

    def ok(self, value: float) -> bool:
        return value >= self.target

    def sensitivity_db(self, ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> float:
        """SQNR for ranking layers: the worst output, and for boxes the worse of coordinates and
        class scores (over the whole head the coordinates' power hides the scores' error)."""
        values = []
        for name in self.ref:
            r, t = ref[name], out[name]
            if self.kind == "boxes":
                values += [sqnr_db(r[:, :4], t[:, :4]), sqnr_db(r[:, 4:], t[:, 4:])]
            else:
                values.append(sqnr_db(r, t))
        return min(-math.inf if math.isnan(v) else v for v in values)

    def failing_rows(self, out: Mapping[str, np.ndarray], start: int) -> int:
        """top1 only: rows start.. of `out` (one batch) that read differently from FP32 in any output.

        Lets an evaluation stop at the batch where the failures exceed what the target allows."""
        rows = np.arange(start, start + len(out[next(iter(self.ref))]))
        return int(self.failing(out, rows).sum())

    def failing(self, out: Mapping[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
        """top1 only: per row of `out` (one batch of the reference's `rows`), whether it reads
        differently from FP32 in any output."""
        bad = np.zeros(len(rows), bool)
        for name, ref in self.ref.items():
            test, part, gap = out[name], ref[rows], self._tie_gap[name]
            bad |= np.asarray(
                [
                    top1_agreement(part[i : i + 1], test[i : i + 1], gap) != 1.0
                    for i in range(len(test))
                ],
                bool,
            )
        return bad

    def margins(self) -> np.ndarray:
        """top1 only: per row, the smallest gap between FP32's two highest scores over every
        output and position; a row with a small gap is the likely one to read differently."""
        gaps = None
        for name, ref in self.ref.items():
            if ref.shape[-1] < 2:  # one class: it always reads the same
                continue
            top, second = _top2(ref.reshape(len(ref), -1, ref.shape[-1]))
            gap = top - second
            tied = self._ties.get(name)
            # a tied position fails only on a third class: the next closest one is the risk
            if tied is not None:
                gap = np.where(tied.reshape(gap.shape), np.inf, gap)
            gap = gap.min(axis=1)
            gaps = gap if gaps is None else np.minimum(gaps, gap)
        rows = len(next(iter(self.ref.values())))
        return gaps if gaps is not None else np.full(rows, np.inf)

    @property
    def ref_boxes(self) -> dict[str, Boxes]:
        """boxes: FP32's detections per output, per row."""
        return self._ref_boxes

    def tally(self) -> Tally:
        """boxes and mask: the score summed batch by batch, with a bound before the last."""
        return Tally(self)

    def gains(self, out: Mapping[str, np.ndarray], start: int) -> dict[str, float]:
        """accuracy only: per output, the summed gain of rows start.. of `out` (one batch)."""
        sums = {n: float(p.gains(out[n], start).sum()) for n, p in self._posterior.items()}
        return {n: -math.inf if math.isnan(v) else v for n, v in sums.items()}

    def best_accuracy(self, gained: Mapping[str, float], end: int) -> float:
        """accuracy only: the highest score rows end.. can still bring, after rows ..end
        gained `gained` (per output): each can gain at most 1 - 2 P_fp32(FP32's reading).
        Lets an evaluation stop at the batch where even that misses the target."""
        return min(
            1.0 + (gained[n] + p.headroom[end:].sum()) / max(len(p.p_ref), 1)
            for n, p in self._posterior.items()
        )


# a Tally's bound is raised by this much, so that float rounding never reads it below a value
# that meets the target (the counts are exact; the mask's sum runs in another order than its mean)
BOUND_SLACK = 1e-9


class Tally:
    """A boxes or mask score summed batch by batch in row order: once every row is in,
    `value()` is Judge.score of them all (the same counts, the mean of the same array);
    before that, `best()` is the highest value the rows left could still bring (each of
    FP32's boxes matched once, with no extra box; an IoU of 1), so an evaluation can stop
    at the batch where even that misses the target."""

    def __init__(self, judge: Judge) -> None:
        if judge.kind not in ("boxes", "mask"):
            raise ValueError(f"a tally sums boxes or mask scores, not {judge.kind}")
        self.judge = judge
        self.is_boxes = judge.kind == "boxes"
        self.total = len(next(iter(judge.ref.values())))
        self.rows = 0
        self.counts = {n: (0, 0, 0) for n in judge.ref}  # boxes: matched, FP32's, the test's
        self.ious: dict[str, list[np.ndarray]] = {n: [] for n in judge.ref}  # mask, per batch
        self.nonfinite: set[str] = set()
        # boxes: FP32's boxes in rows r.. (index r)
        self.boxes_from = {
            n: np.concatenate([np.cumsum([len(b) for b, _ in rows[::-1]])[::-1], [0]])
            for n, rows in judge.ref_boxes.items()
        }

    def add(self, out: Mapping[str, np.ndarray]) -> None:
        """The next batch of rows (outputs by name; those not judged are not read)."""
        n = len(out[next(iter(self.judge.ref))])
        at = slice(self.rows, self.rows + n)
        for name, ref in self.judge.ref.items():
            test = out[name]
            if self.is_boxes:
                got = box_counts(self.judge.ref_boxes[name][at], detections(test))
                matched, n_ref, n_test = self.counts[name]
                self.counts[name] = (matched + got[0], n_ref + got[1], n_test + got[2])
            elif not np.isfinite(test).all():
                self.nonfinite.add(name)
            else:
                self.ious[name].append(mask_ious(ref[at], test))
        self.rows += n

    def value(self) -> float:
        """Judge.score over every row (all added)."""
        if self.rows != self.total:
            raise ValueError(f"a tally of {self.rows} rows of {self.total} has no value yet")
        return min(self._value(name, bound=False) for name in self.judge.ref)

    def best(self) -> float:
        """At least the score every row will read, whatever the rows left read."""
        return min(self._value(name, bound=True) for name in self.judge.ref) + BOUND_SLACK

    def _value(self, name: str, bound: bool) -> float:
        if self.is_boxes:
            matched, n_ref, n_test = self.counts[name]
            rest = int(self.boxes_from[name][self.rows]) if bound else 0
            return _f_score(matched + rest, n_ref + rest, n_test + rest)
        if name in self.nonfinite:
            return -math.inf
        if not self.total:
            return 1.0
        ious = np.concatenate(self.ious[name]) if self.ious[name] else np.zeros(0)
        if not bound:
            return float(np.mean(ious))
        return (float(ious.sum()) + self.total - self.rows) / self.total


def points(score: float) -> str:
    """An accuracy score (1 + expected change) as signed percentage points."""
    return f"{100.0 * (score - 1.0):+.2f} points" if math.isfinite(score) else str(score)


class Posterior:
    """FP32's belief about each row's answer, for the `accuracy` agreement.

    `ref` is FP32's (N, C) class scores or (N, T, C) CTC output (blank 0); probabilities are the
    rows where every row is a distribution, else the softmax of the logits. Only the columns a
    reading needs are turned into log-probabilities, one row at a time.
    """

    def __init__(self, ref: np.ndarray) -> None:
        self.ref = np.asarray(ref)
        self.ctc = self.ref.ndim == 3
        self.is_distribution = _is_distribution(self.ref)
        self.readings = readings(self.ref)
        self.p_ref = np.asarray(
            [self.probability(i, r) for i, r in enumerate(self.readings)], dtype=np.float64
        )
        self.headroom = np.maximum(0.0, 1.0 - 2.0 * self.p_ref)  # P(other) <= 1 - P(reading)

    def log_probs(self, i: int, columns: np.ndarray) -> np.ndarray:
        """log P_fp32 of row i at `columns` of the last axis: (C,) -> (k,), (T, C) -> (T, k)."""
        row = self.ref[i].astype(np.float64)
        with np.errstate(divide="ignore"):
            if self.is_distribution:
                return np.log(row[..., columns])
            top = row.max(axis=-1, keepdims=True)
            norm = top + np.log(np.exp(row - top).sum(axis=-1, keepdims=True))
            return row[..., columns] - norm

    def probability(self, i: int, reading: tuple[int, ...]) -> float:
        """P_fp32(reading) for row i: the class's probability, or the CTC label sequence's."""
        if not self.ctc:
            return float(np.exp(self.log_probs(i, np.asarray(reading))[0]))
        # the blank and the label's distinct classes (blank 0 sorts first: index 0)
        columns, label = np.unique(np.asarray((0, *reading), dtype=np.int64), return_inverse=True)
        lp = self.log_probs(i, columns)
        return float(np.exp(ctc_log_likelihood(lp, label[1:], blank=0)))

    def gains(self, test: np.ndarray, start: int = 0) -> np.ndarray:
        """Per row of `test` (rows start.. of the reference): P_fp32(test's reading) -
        P_fp32(FP32's reading); 0 where they read the same, NaN for a row that is not finite."""
        test = np.asarray(test)[: max(0, len(self.readings) - start)]  # no rows past the end
        if not len(test):
            return np.zeros(0)
        finite = np.isfinite(test.reshape(len(test), -1)).all(axis=1)
        out = np.where(finite, 0.0, np.nan)
        for k, reading in enumerate(readings(test)):
            i = start + k
            if finite[k] and reading != self.readings[i]:
                out[k] = self.probability(i, reading) - self.p_ref[i]
        return out


def readings(out: np.ndarray) -> list[tuple[int, ...]]:
    """How each row is read: (N, C) the arg-max class; (N, T, C) greedy CTC decoding."""
    top = np.asarray(out).argmax(axis=-1)
    if top.ndim == 1:
        return [(int(c),) for c in top]
    return [_ctc(seq) for seq in top]


def ctc_log_likelihood(
    log_probs: np.ndarray, label: Sequence[int] | np.ndarray, blank: int = 0
) -> float:
    """log P(label) under per-frame log-probabilities (T, C): the CTC forward algorithm
    (Graves et al. 2006, eq. 6-8) in log space, summing over every alignment that reads as
    `label` (repeats merged, blanks dropped). -inf where no alignment fits in T frames."""
    lp = np.asarray(log_probs, dtype=np.float64)
    t_len = len(lp)
    ext = np.full(2 * len(label) + 1, blank, dtype=np.int64)  # blank, l1, blank, l2, ..., blank
    ext[1::2] = label
    if t_len == 0:
        return 0.0 if not len(label) else -math.inf
    # a label may come from two back only when it is not a blank and differs from that one
    skip = np.zeros(len(ext), dtype=bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = np.full(len(ext), -np.inf)
    alpha[0] = lp[0, ext[0]]
    if len(ext) > 1:
        alpha[1] = lp[0, ext[1]]
    for t in range(1, t_len):
        padded = np.concatenate([[-np.inf, -np.inf], alpha])  # alpha[s - 1], alpha[s - 2]
        step = padded[1:-1]
        jump = np.where(skip, padded[:-2], -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, step), jump) + lp[t, ext]
    end = alpha[-1] if len(ext) == 1 else np.logaddexp(alpha[-1], alpha[-2])
    return float(end)


def top1_agreement(ref: np.ndarray, test: np.ndarray, tie_gap: float | None = None) -> float:
    """Share of rows whose arg-max over the last axis reads as FP32's.

    (N, C): the class. (N, T, C): the sequence as greedy CTC decoding reads it (repeats merged,
    class 0 dropped: the blank of PaddleOCR and of torch's CTCLoss), so a blank that moves by one
    position does not count; other (N, ..., C): every position. `tie_gap` (`ref` holds
    probabilities): where `test` picks a class whose FP32 probability is within `tie_gap` of
    FP32's own pick's, it reads as FP32's pick.
    """
    if not np.isfinite(test).all():
        return math.nan
    a, b = ref.argmax(axis=-1), test.argmax(axis=-1)
    if tie_gap is not None:
        picked = np.take_along_axis(ref, b[..., None], axis=-1)[..., 0]
        b = np.where(picked >= ref.max(axis=-1) - tie_gap, a, b)
    if not len(a):
        return 1.0
    if a.ndim == 2:
        return float(np.mean([_ctc(r) == _ctc(t) for r, t in zip(a, b, strict=True)]))
    return float((a == b).reshape(len(a), -1).all(axis=1).mean())


def ties(ref: np.ndarray, gap: float = TIE_GAP) -> np.ndarray:
    """Positions (ref.shape[:-1]) where FP32's two most probable classes are within `gap` of
    each other, where the rows are the model's own probabilities. Logits have none: their
    softmax need not be a belief (the scale of a classifier's scores is free; a model whose
    scores are all small would be "torn" everywhere)."""
    ref = np.asarray(ref, dtype=np.float64)
    if ref.shape[-1] < 2 or not ref.size or not _is_distribution(ref):
        return np.zeros(ref.shape[:-1], bool)
    return _close_top2(ref, gap)


def _close_top2(ref: np.ndarray, gap: float) -> np.ndarray:
    """Positions whose two highest values on the last axis are within `gap` (one class: none)."""
    if ref.shape[-1] < 2:
        return np.zeros(ref.shape[:-1], bool)
    a = np.asarray(ref)
    top, second = _top2(a if a.dtype.kind == "f" else a.astype(np.float64))
    return (top.astype(np.float64) - second.astype(np.float64)) < gap


def _top2(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two largest values on the last axis (float `a`, at least 2 wide), in `a`'s type: the
    values np.partition picks, at a third of its time on a (64, 40, 6625) CTC output (one
    copy with the largest masked instead of a partial sort of every position)."""
    first = np.argmax(a, axis=-1)[..., None]
    top = np.take_along_axis(a, first, axis=-1)[..., 0]
    rest = a.copy()
    np.put_along_axis(rest, first, -np.inf, axis=-1)
    return top, rest.max(axis=-1)


def _ctc(seq: np.ndarray) -> tuple[int, ...]:
    keep = np.concatenate([[True], seq[1:] != seq[:-1]]) & (seq != 0)
    return tuple(seq[keep].tolist())


Boxes = list[tuple[np.ndarray, np.ndarray]]  # per row: (boxes x1y1x2y2 [K, 4], classes [K])


def detections(out: np.ndarray) -> Boxes:
    """YOLOv5/v8 head (N, 4 + C, A) -> per row the boxes above SCORE_THRESHOLD after per-class NMS."""
    rows: Boxes = []
    for pred in np.asarray(out, dtype=np.float64):
        scores = pred[4:]
        cls = scores.argmax(axis=0)
        conf = scores[cls, np.arange(pred.shape[1])]
        keep = np.flatnonzero(conf >= SCORE_THRESHOLD)
        cx, cy, w, h = pred[:4, keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kept = _nms(boxes, conf[keep], cls[keep])
        rows.append((boxes[kept], cls[keep][kept]))
    return rows


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a [K, 4] and b [M, 4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _nms(boxes: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> np.ndarray:
    order = np.argsort(-conf, kind="stable")
    kept: list[int] = []
    for i in order:
        if kept:
            same = np.asarray([cls[k] == cls[i] for k in kept])
            if np.any(same & (_iou(boxes[[i]], boxes[kept])[0] > NMS_IOU)):
                continue
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


def box_agreement(ref: Sequence, test: Sequence) -> float:
    """F-score of test boxes matched one-to-one to ref boxes (same class, IoU >= MATCH_IOU), all rows."""
    return _f_score(*box_counts(ref, test))


def box_counts(ref: Sequence, test: Sequence) -> tuple[int, int, int]:
    """(matched, ref boxes, test boxes) over the rows: box_agreement's counts, which add up
    over parts of the rows."""
    matched = n_ref = n_test = 0
    for (rb, rc), (tb, tc) in zip(ref, test, strict=True):
        n_ref, n_test = n_ref + len(rb), n_test + len(tb)
        if not len(rb) or not len(tb):
            continue
        iou = _iou(rb, tb) * (rc[:, None] == tc[None, :])
        used = np.zeros(len(tb), dtype=bool)
        for i in range(len(rb)):
            cand = np.where(used, -1.0, iou[i])
            j = int(cand.argmax())
            if cand[j] >= MATCH_IOU:
                used[j] = True
                matched += 1
    return matched, n_ref, n_test


def _f_score(matched: int, n_ref: int, n_test: int) -> float:
    if n_ref + n_test == 0:
        return 1.0
    return 2.0 * matched / (n_ref + n_test)


def matched_share(ref: Sequence, test: Sequence) -> float:
    """Share of ref boxes matched (the recall of FP32's boxes), for reports."""
    n = sum(len(b) for b, _ in ref)
    f = box_agreement(ref, test)
    m = f * (n + sum(len(b) for b, _ in test)) / 2
    return m / n if n else 1.0


def mask_agreement(ref: np.ndarray, test: np.ndarray, threshold: float = MASK_THRESHOLD) -> float:
    """Mean over rows of the IoU of the maps binarised at `threshold` (1 for a row where both
    are empty); NaN when `test` is not finite."""
    if not np.isfinite(test).all():
        return math.nan
    if not len(ref):
        return 1.0
    return float(np.mean(mask_ious(ref, test, threshold)))


def mask_ious(ref: np.ndarray, test: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Per row, the IoU mask_agreement averages (finite `test`)."""
    r = np.asarray(ref).reshape(len(ref), -1) > threshold
    t = np.asarray(test).reshape(len(test), -1) > threshold
    inter = np.count_nonzero(r & t, axis=1)
    union = np.count_nonzero(r | t, axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
