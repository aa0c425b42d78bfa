"""Models over protobuf's 2 GiB limit: sizes, shape inference and copies without the weights.

protobuf cannot serialise a message over 2 GiB, and several onnx calls serialise the whole
model behind the scenes: `ModelProto.ByteSize()` (upb computes it by serialising),
`onnx.shape_inference.infer_shapes(model)`, `onnx.checker.check_model(model)`. Shape and type
inference needs each weight's dtype and dims, never its values, so it runs here on a skeleton:
the model with every large tensor replaced by an external-data reference that points nowhere
(onnx's inference skips external data, as for a model loaded with `load_external_data=False`).
The skeleton is built without copying the weights, so a 2 GiB model costs no second 2 GiB
in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._io import PROTOBUF_LIMIT, all_tensors
from ._lazy import lazy_module

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs
else:
    onnx = lazy_module("onnx")
    gs = lazy_module("onnx_graphsurgeon")

# tensors at least this large are left out of skeletons; shape-like data (which inference
# propagates with data_prop) is far smaller
BIG_TENSOR = 1 << 16
# where the stubs' external data "lives": nothing reads it (a reader would find no such file)
STRIPPED = "<weights left out for shape inference>"
# margin under protobuf's limit for the graph itself (nodes, names, small tensors)
LARGE_MODEL = PROTOBUF_LIMIT - (1 << 24)


def size_of(tensor: onnx.TensorProto) -> int:
    """About how many bytes `tensor` takes inline. upb's ByteSize() serialises the message
    (0.8 s for 256 MiB), so raw data is measured from dims and type where they tell it."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return tensor.ByteSize()  # no data inside: small
    if tensor.HasField("raw_data"):
        count = 1
        for dim in tensor.dims:
            count *= int(dim)
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            itemsize = 0
        if itemsize and count >= 0:
            return count * itemsize + 64 + len(tensor.name)
    return tensor.ByteSize()


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every tensor `model` holds (initializers, attributes, subgraphs, functions),
    summed tensor by tensor: `model.ByteSize()` would serialise the model and fail past 2 GiB."""
    return sum(size_of(t) for t in all_tensors(model))


def is_large(model: onnx.ModelProto) -> bool:
    """Whether `model` cannot be serialised as one protobuf message (weights must go external)."""
    return tensor_bytes(model) >= LARGE_MODEL


def _stub_fields(tensor: onnx.TensorProto) -> None:
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", STRIPPED


def stub(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """A TensorProto like `tensor` (name, dims, type, doc) without its data: marked external
    at a location nothing can read."""
    out = onnx.TensorProto()
    out.name = tensor.name
    out.dims.extend(tensor.dims)
    out.data_type = tensor.data_type
    if tensor.doc_string:
        out.doc_string = tensor.doc_string
    _stub_fields(out)
    return out


# messages that may hold a TensorProto somewhere inside; any other message is copied whole
_HOLDERS = (
    "ModelProto",
    "GraphProto",
    "NodeProto",
    "AttributeProto",
    "FunctionProto",
    "SparseTensorProto",
    "TrainingInfoProto",
)


def copy_without_weights(
    message: Any,
    min_bytes: int | None = None,
    replace: Callable[[onnx.TensorProto], onnx.TensorProto] = stub,
) -> Any:
    """A copy of an ONNX message in which every inline tensor of at least `min_bytes` is
    `replace(tensor)` (default: a stub), built field by field so that the large tensors are
    never copied; the source is only read (protobuf's arenas would keep any bytes a
    temporary edit moved, so nothing is moved)."""
    min_bytes = BIG_TENSOR if min_bytes is None else min_bytes
    name = message.DESCRIPTOR.name
    if name == "TensorProto":
        if message.data_location != onnx.TensorProto.EXTERNAL and size_of(message) >= min_bytes:
            return replace(message)
        out = onnx.TensorProto()
        out.CopyFrom(message)
        return out
    out = type(message)()
    if name not in _HOLDERS:
        out.CopyFrom(message)
        return out
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            if field.is_repeated:
                getattr(out, field.name).extend(value)
            else:
                setattr(out, field.name, value)
        elif field.is_repeated:
            getattr(out, field.name).extend(
                copy_without_weights(item, min_bytes, replace) for item in value
            )
        else:
            getattr(out, field.name).CopyFrom(copy_without_weights(value, min_bytes, replace))
    return out


def skeleton(model: onnx.ModelProto, min_bytes: int | None = None) -> onnx.ModelProto:
    """A copy of `model` whose large tensors are stub external references (see module doc):
    small enough to serialise, infer or print whatever the weights weigh."""
    return copy_without_weights(model, min_bytes)


def infer_shapes(model: onnx.ModelProto, **options: Any) -> onnx.ModelProto:
    """`onnx.shape_inference.infer_shapes(model, **options)` for a model of any size.

    The result is inferred from a skeleton, so it holds types and shapes (value_info, graph
    inputs and outputs) but not the large weights: read shapes from it, never weights.
    """
    return onnx.shape_inference.infer_shapes(skeleton(model), **options)


def annotate_shapes(model: onnx.ModelProto, **options: Any) -> onnx.ModelProto:
    """`model` with what shape inference learns, weights kept: onnx's own result for a model
    under the 2 GiB limit; past it, the main graph's inferred value_info and output types
    are written into `model` itself (no copy of the weights)."""
    if not is_large(model):
        return onnx.shape_inference.infer_shapes(model, **options)
    inferred = infer_shapes(model, **options)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    for mine, found in zip(model.graph.output, inferred.graph.output, strict=True):
        mine.type.CopyFrom(found.type)
    return model


def export_for_inference(graph: gs.Graph) -> onnx.ModelProto:
    """`gs.export_onnx(graph)` with large constants exported as stub references: what shape
    inference needs (dtypes, dims, small values) without a copy of the weights.

    graph-surgeon also writes a lazily-held constant's name into its *source* TensorProto (for an
    unnamed Constant-node value that adds an empty `name` field, so the caller's model would
    no longer serialise byte-identically); that side effect is undone here.
    """
    candidates = list(graph.tensors().values())
    for sub in [graph, *graph.subgraphs(recursive=True)]:
        candidates += [v for n in sub.nodes for v in n.attrs.values() if isinstance(v, gs.Constant)]
    named = []
    stubbed = []
    for tensor in candidates:
        values = getattr(tensor, "_values", None)
        if values is None:
            continue
        proto = getattr(values, "tensor", None)
        if isinstance(proto, onnx.TensorProto):
            named.append((proto, proto.HasField("name"), proto.name))
        nbytes = getattr(values, "nbytes", 0)
        if nbytes < BIG_TENSOR or isinstance(proto, onnx.SparseTensorProto):
            continue
        empty = onnx.TensorProto()
        empty.name = tensor.name
        empty.dims.extend(int(d) for d in values.shape)
        empty.data_type = (
            proto.data_type
            if isinstance(proto, onnx.TensorProto)
            else onnx.helper.np_dtype_to_tensor_dtype(values.dtype)
        )
        _stub_fields(empty)
        stubbed.append((tensor, values))
        tensor._values = gs.ir.tensor.LazyValues(empty)
    try:
        return gs.export_onnx(graph, do_type_check=False)
    finally:
        for tensor, values in stubbed:
            tensor._values = values
        for proto, had_name, name in named:
            if had_name:
                proto.name = name
            else:
                proto.ClearField("name")


def infer_graph_shapes(graph: gs.Graph, **options: Any) -> onnx.ModelProto:
    """Shape inference on a graph-surgeon graph of any size (see `export_for_inference`)."""
    return onnx.shape_inference.infer_shapes(export_for_inference(graph), **options)
