"""Graph-rewrite passes on onnx-graphsurgeon graphs, and the machinery to run them."""

from ._infra import Pass, PassManager, PassRecord, PassResult, PipelineReport, SkippedNode, result
from ._registry import BUILTIN_PASSES, ENTRY_POINT_GROUP, get_pass, registered_passes

__all__ = [
    "BUILTIN_PASSES",
    "ENTRY_POINT_GROUP",
    "Pass",
    "PassManager",
    "PassRecord",
    "PassResult",
    "PipelineReport",
    "SkippedNode",
    "get_pass",
    "registered_passes",
    "result",
]
