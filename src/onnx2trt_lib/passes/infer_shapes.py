"""`infer-shapes`: fill in tensor shapes and dtypes with ONNX's own shape inference.

Later passes (and TensorRT's parser) make better decisions when intermediate shapes are
known. Only unknown information is added; shapes the graph already states are kept.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from .._weights import infer_graph_shapes
from ._infra import PassResult, SkippedNode, result


class InferShapesPass:
    name = "infer-shapes"
    op_types: tuple[str, ...] = ()

    def __init__(self, *, data_prop: bool | None = None) -> None:
        self.data_prop = True if data_prop is None else data_prop

    def run(self, graph: gs.Graph) -> PassResult:
        try:  # on a copy without the large weights: past 2 GiB onnx could not serialise it
            inferred = infer_graph_shapes(graph, strict_mode=False, data_prop=self.data_prop)
        except Exception as exc:  # inference failure is not fatal: report it as a skip
            return result(
                self.name, {}, [SkippedNode("<graph>", "", f"shape inference failed: {exc}")]
            )
        known = {
            vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
        }
        updated = 0
        for name, tensor in graph.tensors().items():
            if not isinstance(tensor, gs.Variable) or name not in known:
                continue
            dtype, shape = _dtype_and_shape(known[name])
            changed = False
            if tensor.dtype is None and dtype is not None:
                tensor.dtype = dtype
                changed = True
            if tensor.shape is None and shape is not None:
                tensor.shape = shape
                changed = True
            updated += changed
        return result(self.name, {"tensors_annotated": updated})


def _dtype_and_shape(value_info: onnx.ValueInfoProto):
    """(numpy dtype or None, shape list or None) of a tensor ValueInfo; dims are int, str or None."""
    if not value_info.type.HasField("tensor_type"):
        return None, None
    tensor_type = value_info.type.tensor_type
    dtype = None
    if tensor_type.elem_type:
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        except (KeyError, ValueError):
            dtype = None
    if not tensor_type.HasField("shape"):
        return dtype, None
    shape = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            shape.append(dim.dim_param)
        else:
            shape.append(None)
    return dtype, shape
