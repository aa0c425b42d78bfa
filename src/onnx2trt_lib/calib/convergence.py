"""Convergence report: how far each tensor's threshold moved over the last part of the data.

Thresholds computed on the histograms after the first 80% of the batches are compared with the
final ones. Small moves say more data would change little; a tensor that still moves a lot is
one whose range is decided by rare samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import CalibrationError
from .state import CalibrationState

SNAPSHOT = (
    0.8  # the report compares the thresholds at this fraction of the batches with the final ones
)


def convergence_report(
    final: Mapping[str, float],
    partial: CalibrationState,
    total_samples: int,
    method: str,
    options: Mapping[str, Any],
    *,
    top: int = 5,
) -> dict[str, Any] | None:
    """{samples_before, samples_after, max/median relative move, the tensors that moved most}."""
    try:
        before = partial.compute_amax(method, **dict(options))
    except CalibrationError:  # e.g. a tensor with no finite value yet: nothing to compare
        return None
    moves = {
        name: abs(final[name] - before[name]) / final[name]
        for name in final
        if name in before and final[name] > 0 and math.isfinite(before[name])
    }
    if not moves:
        return None
    ordered = sorted(moves.values())
    worst = sorted(moves, key=lambda n: -moves[n])[:top]
    return {
        "samples_before": partial.num_samples,
        "samples_after": total_samples,
        "max_relative_move": ordered[-1],
        "median_relative_move": ordered[len(ordered) // 2],
        "moved_most": {name: {"before": before[name], "after": final[name]} for name in worst},
    }
