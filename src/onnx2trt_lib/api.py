"""The two calls most users start with: `fix` a model for a TensorRT version, `lint` it first."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import onnx

from ._io import load_model
from .passes import PassManager, PipelineReport, get_pass

if TYPE_CHECKING:
    import numpy as np


def _resolve_passes(target, passes: Sequence[str | object] | None) -> list[object]:
    from .compat import get_target, passes_for_target

    if passes is None:
        return passes_for_target(get_target(target) if isinstance(target, str) else target)
    return [get_pass(p) if isinstance(p, str) else p for p in passes]


def fix(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    target: str = "tensorrt-7.1",
    passes: Sequence[str | object] | None = None,
    check: bool = True,
    check_inputs: Mapping[str, np.ndarray] | None = None,
) -> tuple[onnx.ModelProto, PipelineReport]:
    """Rewrite `model` so the `target` TensorRT parser accepts it.

    Runs the pipeline the target needs (or the given pass names / instances, in order) on
    a copy; the input model or file is never modified. Returns (fixed model, report).

    With `check` (the default), the original and the fixed model run in ONNX Runtime on
    generated inputs (or `check_inputs`) and every output must match; a mismatch raises
    `errors.EquivalenceError` (a PassError) naming the pass that caused it. `report.check` says what was
    checked, or why it was skipped (ONNX Runtime cannot run the original).
    """
    source = load_model(model)
    pipeline = _resolve_passes(target, passes)
    fixed, report = PassManager(pipeline).run(source)
    if check or check_inputs is not None:
        from .verify import check_fix

        report = dataclasses.replace(
            report, check=check_fix(source, fixed, pipeline, inputs=check_inputs)
        )
    return fixed, report


def lint(model: str | os.PathLike | onnx.ModelProto, *, target: str = "tensorrt-7.1") -> list:
    """Findings: the nodes the `target` parser refuses, each with the pass that fixes it (or None)."""
    from .compat import get_target, lint_model

    return lint_model(load_model(model), get_target(target))
