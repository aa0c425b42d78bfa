"""The insert-qdq pipeline on a model proto: shared by `quantize`, protection and the switch model."""

from __future__ import annotations

import onnx

from ..passes._infra import PassManager, PipelineReport
from ..passes.insert_qdq import InsertQdqPass


def insert_qdq(model: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, PipelineReport]:
    """Run the insert-qdq pass (then cleanup and sort) on a copy of `model`."""
    qmodel, pipeline = PassManager([InsertQdqPass(**options)]).run(model)
    if qmodel is model:  # nothing quantized: still hand back a copy
        qmodel = onnx.ModelProto()
        qmodel.CopyFrom(model)
    return qmodel, pipeline
