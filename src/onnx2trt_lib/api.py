"""The two calls most users start with: `fix` a model for a TensorRT version, `lint` it first."""

from __future__ import annotations

import os
from collections.abc import Sequence

import onnx

from ._io import load_model
from .passes import Pass, PassManager, PipelineReport, get_pass


def _resolve_passes(target, passes: Sequence[str | Pass] | None) -> list[Pass]:
    from .compat import get_target, passes_for_target

    if passes is None:
        return passes_for_target(get_target(target) if isinstance(target, str) else target)
    return [get_pass(p) if isinstance(p, str) else p for p in passes]


def fix(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    target: str = "tensorrt-7.1",
    passes: Sequence[str | Pass] | None = None,
) -> tuple[onnx.ModelProto, PipelineReport]:
    """Rewrite `model` so the `target` TensorRT parser accepts it.

    Runs the pipeline the target needs (or the given pass names / instances, in order) on
    a copy; the input model or file is never modified. Returns (fixed model, report).
    """
    source = load_model(model)
    pipeline = _resolve_passes(target, passes)
    return PassManager(pipeline).run(source)


def lint(model: str | os.PathLike | onnx.ModelProto, *, target: str = "tensorrt-7.1") -> list:
    """Findings: the nodes the `target` parser refuses, each with the pass that fixes it (or None)."""
    from .compat import get_target, lint_model

    return lint_model(load_model(model), get_target(target))
