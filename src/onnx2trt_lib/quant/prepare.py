"""Optional rewrites of the FP32 model that make it quantize better, run before calibration.

Three published techniques, each its own module and each off unless asked (measured numbers
in docs/calibration.md and benchmarks/results/quant.md):

* `equalize` (quant.equalize): cross-layer equalisation, data-free, FP32 function unchanged;
* `smooth_quant` (quant.smooth_quant): outlier channels of MatMul inputs after LayerNorm or a
  residual Add moved into the weights, FP32 function unchanged;
* `bias_correction` (quant.bias_correction): biases shifted by the mean weight-rounding error
  measured on the data; the FP32 model changes on purpose.

They run in that order (bias correction last, on the final weights). The ranges must then be
calibrated on the prepared model, which is what `calibrate --qdq` does with the options.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .._io import load_model
from ..errors import UsageError
from ..passes._infra import PassResult, _carry_model_metadata, export_graph

PREPARE_SAMPLES = 256  # rows of the data that smooth-quant and bias correction look at


@dataclass(frozen=True)
class PrepareResult:
    """The prepared FP32 model and, per technique that ran, what it changed."""

    model: onnx.ModelProto
    results: tuple[PassResult, ...] = ()

    @property
    def modified(self) -> bool:
        return any(r.modified for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"modified": self.modified, "techniques": [r.to_dict() for r in self.results]}

    def summary_lines(self) -> list[str]:
        lines = []
        for r in self.results:
            what = ", ".join(f"{k}={v}" for k, v in r.counts.items() if v) or "nothing to change"
            lines.append(f"{r.name}: {what}")
        return lines


def equalize_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassResult]:
    from .equalize import EqualizeCrossLayerPass

    graph = gs.import_onnx(model)
    res = EqualizeCrossLayerPass().run(graph)
    if not res.modified:
        return model, res
    graph.cleanup().toposort()
    out = export_graph(graph)
    _carry_model_metadata(model, out)
    return out, res


def prepare_int8(
    model: str | os.PathLike | onnx.ModelProto,
    data: Any = None,
    *,
    equalize: bool = False,
    smooth_quant: bool | float = False,
    bias_correction: bool = False,
    preprocess: Any = None,
    shapes: Any = None,
    batch_size: int | None = None,
) -> PrepareResult:
    """The FP32 model rewritten by the techniques asked for (the input is not modified).

    `smooth_quant`: True for alpha 0.5, or the alpha itself (0..1). `data` (anything
    `calibrate` takes, or a list of {input: array} feeds) is needed by smooth-quant and bias
    correction; its first PREPARE_SAMPLES rows are used. Calibrate the returned `.model`.
    """
    proto = load_model(model)
    alpha = None
    if smooth_quant is not False and smooth_quant is not None:
        alpha = 0.5 if smooth_quant is True else float(smooth_quant)
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"smooth-quant alpha {alpha} must be between 0 and 1")
    needs_data = alpha is not None or bias_correction
    if needs_data and data is None:
        raise UsageError("smooth-quant and bias correction need data (the calibration data)")
    results: list[PassResult] = []
    if equalize:
        proto, res = equalize_model(proto)
        results.append(res)
    if not needs_data:
        return PrepareResult(proto, tuple(results))
    feeds = _feeds(proto, data, preprocess, shapes, batch_size)
    if alpha is not None:
        from .smooth_quant import SmoothQuant

        proto, res = SmoothQuant(alpha=alpha).run(proto, feeds)
        results.append(res)
    if bias_correction:
        from .bias_correction import CorrectBias

        proto, res = CorrectBias().run(proto, feeds)
        results.append(res)
    return PrepareResult(proto, tuple(results))


def _feeds(
    model: onnx.ModelProto, data: Any, preprocess: Any, shapes: Any, batch_size: int | None
) -> list[dict[str, np.ndarray]]:
    if isinstance(data, Sequence) and data and all(isinstance(d, Mapping) for d in data):
        feeds: list[dict[str, np.ndarray]] = []
        rows = 0
        for feed in data:
            feeds.append({k: np.asarray(v) for k, v in feed.items()})
            rows += len(next(iter(feeds[-1].values()), ()))
            if rows >= PREPARE_SAMPLES:
                break
        return feeds
    from ..calib.collect import model_feeds
    from .api import _rebatch

    step = batch_size or 1
    found = model_feeds(
        model,
        data,
        preprocess=preprocess,
        shapes=shapes,
        batch_size=batch_size,
        max_batches=max(1, -(-PREPARE_SAMPLES // step)),
    )
    return _rebatch(found, model)
