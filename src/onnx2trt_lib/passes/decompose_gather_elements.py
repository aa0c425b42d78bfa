"""`decompose-gather-elements`: GatherElements -> Gather on the flattened data (for TensorRT < 7.2).

The TensorRT 7.0/7.1 ONNX parsers (and ncnn-style runtimes) have no GatherElements; the
7.2 parser imported it as a plain Gather on flattened data, and this pass writes that form
into the graph itself.

The algebra. For data of shape D (rank r), indices of shape I (same rank), axis a:

    out[p] = data[p_0, ..., p_{a-1}, idx[p], p_{a+1}, ..., p_{r-1}]      (p runs over I)
           = flat(data)[ sum_{d != a} p_d * stride_d  +  idx'[p] * stride_a ]
    stride_d = D_{d+1} * ... * D_{r-1}                                    (row-major)

with idx' the index normalised into [0, D_a). Negative indices are normalised without a
comparison or Where (not all old parsers import those): `idx' = lut[idx + D_a]` where
`lut = [0, 1, ..., D_a-1, 0, 1, ..., D_a-1]`, valid for the whole legal range
[-D_a, D_a). Constant indices are normalised here, in numpy.

Each term `p_d * stride_d` is a tensor of shape [1, .., I_d, .., 1] (a constant when I_d and
the strides are static; otherwise Range over a dim read with Shape) and they broadcast
together with `idx' * stride_a` to the shape I, so the final `Gather(Reshape(data, [-1]),
flat_index, axis=0)` already has the output's shape. Dims with I_d == 1 contribute nothing.

Ops emitted: Reshape, Gather, Add, Mul, and only for dynamic dims Shape, Range, Concat and
(int32 indices) Cast; all in the TensorRT 7.0 parser's operator list (Range there was not
re-checked here). Everything stays in the indices' integer type, so int32 indices require
data with fewer than 2**31 elements, as any int32 flat index does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .._weights import infer_graph_shapes
from ._infra import PassResult, SkippedNode, result
from ._names import FreshNames

log = logging.getLogger(__name__)


class DecomposeGatherElementsPass:
    """Rewrite every GatherElements (also inside If/Loop/Scan bodies) as Gather on flat data."""

    name = "decompose-gather-elements"
    op_types: tuple[str, ...] = ("GatherElements",)

    def __init__(self) -> None:
        # No options: the rewrite is exact for every rank, axis and shape.
        pass

    def run(self, graph: gs.Graph) -> PassResult:
        skipped: list[SkippedNode] = []
        new_tensors: list[gs.Variable] = []
        decomposed = self._run_graph(
            graph, _TensorInfo(graph), FreshNames(graph), skipped, new_tensors
        )
        if new_tensors:
            _annotate(graph, new_tensors)
        return result(self.name, {"decomposed": decomposed}, skipped)

    def _run_graph(
        self,
        graph: gs.Graph,
        info: _TensorInfo,
        fresh: FreshNames,
        skipped: list[SkippedNode],
        new_tensors: list[gs.Variable],
    ) -> int:
        count = 0
        replacements: dict[int, list[gs.Node]] = {}
        for node in graph.nodes:
            for value in node.attrs.values():
                if isinstance(value, gs.Graph):
                    count += self._run_graph(value, info, fresh, skipped, new_tensors)
            if node.op != "GatherElements" or node.domain not in ("", "ai.onnx", None):
                continue
            reason = _why_not(node, info)
            new_nodes = None if reason else _decompose(node, info, fresh)
            if isinstance(new_nodes, str):
                reason, new_nodes = new_nodes, None
            if reason:
                skipped.append(SkippedNode(node.name, node.op, reason))
                continue
            assert new_nodes is not None  # no reason: _decompose gave nodes
            replacements[id(node)] = new_nodes
            new_tensors.extend(t for n in new_nodes[:-1] for t in n.outputs)
            count += 1
        if replacements:
            # the new nodes go where the old one was (one pass over the list: the graph stays sorted)
            graph.nodes = [new for old in graph.nodes for new in replacements.get(id(old), [old])]
        return count


class _TensorInfo:
    """dtype and dims of a tensor: what the graph states, else ONNX shape inference on a copy.

    Exporters often leave intermediate tensors unannotated (torch's legacy exporter does);
    inference runs at most once per pass run, and only when some GatherElements needs it.
    The graph itself is not annotated, so a pass that skips everything changes nothing.
    """

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self._inferred: dict[str, onnx.TypeProto] | None = None

    def _lookup(self, tensor: gs.Tensor) -> onnx.TypeProto | None:
        if self._inferred is None:
            self._inferred = {}
            try:
                model = infer_graph_shapes(self.graph)
            except (
                Exception
            ) as exc:  # inference is a best effort: the node is skipped with a reason
                log.debug("shape inference failed: %s", exc)
                return None
            self._inferred = {v.name: v.type for v in _all_value_infos(model.graph)}
        return self._inferred.get(tensor.name)

    def dtype(self, tensor: gs.Tensor) -> np.dtype | None:
        if isinstance(tensor, gs.Constant):
            return np.dtype(tensor.values.dtype)
        if tensor.dtype is not None:
            return np.dtype(tensor.dtype)
        found = self._lookup(tensor)
        if found is None or not found.tensor_type.elem_type:
            return None
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(found.tensor_type.elem_type))

    def dims(self, tensor: gs.Tensor) -> list[int | None] | None:
        """Dims as ints where static, None where symbolic; None when the rank is unknown."""
        if isinstance(tensor, gs.Constant):
            return list(tensor.values.shape)
        shape = tensor.shape
        if shape is None:
            found = self._lookup(tensor)
            if found is None or not found.tensor_type.HasField("shape"):
                return None
            shape = [
                d.dim_value if d.HasField("dim_value") else None
                for d in found.tensor_type.shape.dim
            ]
        return [int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None for d in shape]


def _annotate(graph: gs.Graph, tensors: list[gs.Variable]) -> None:
    """Give the tensors this pass created the shapes ONNX inference finds (as infer-shapes would).

    Without it, an infer-shapes pass run after this one (or in the next pipeline run) would
    find new tensors to annotate, and a second `fix` would not be a no-op.
    """
    try:
        model = infer_graph_shapes(graph, strict_mode=False, data_prop=True)
    except Exception as exc:  # annotation is a nicety; the rewrite is already complete
        log.debug("shape inference after decompose-gather-elements failed: %s", exc)
        return
    inferred = {v.name: v.type for v in _all_value_infos(model.graph)}
    for tensor in tensors:
        found = inferred.get(tensor.name)
        if tensor.shape is None and found is not None and found.tensor_type.HasField("shape"):
            tensor.shape = [
                d.dim_value
                if d.HasField("dim_value")
                else (d.dim_param if d.HasField("dim_param") else None)
                for d in found.tensor_type.shape.dim
            ]


def _all_value_infos(graph: onnx.GraphProto):
    yield from list(graph.input) + list(graph.output) + list(graph.value_info)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_value_infos(attr.g)


def _rank(node: gs.Node, info: _TensorInfo) -> int | None:
    """Data, indices and output all have the same rank; any one that is known gives it."""
    for tensor in (node.inputs[1], node.inputs[0], node.outputs[0]):
        dims = info.dims(tensor)
        if dims is not None:
            return len(dims)
    return None


def _why_not(node: gs.Node, info: _TensorInfo) -> str | None:
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        return "expected 2 inputs and 1 output"
    rank = _rank(node, info)
    if rank is None:
        return "rank of data and indices unknown; run infer-shapes first"
    if rank == 0:
        return "GatherElements on a scalar is not valid ONNX"
    axis = int(node.attrs.get("axis", 0))
    if not -rank <= axis < rank:
        return f"axis {axis} out of range for rank {rank}"
    if info.dtype(node.inputs[1]) not in (np.dtype(np.int32), np.dtype(np.int64)):
        return "indices dtype unknown or not int32/int64; run infer-shapes first"
    return None


def _known(value) -> bool:
    """True for a value known now (numpy), False for a graph tensor computed at run time."""
    return not isinstance(value, gs.Tensor)


class _Builder:
    """Adds nodes named after the rewritten node; folds arithmetic on numpy operands."""

    def __init__(self, prefix: str, dtype: np.dtype, fresh: FreshNames) -> None:
        self.prefix, self.dtype, self.fresh = prefix, dtype, fresh
        self.n = 0
        self.nodes: list[gs.Node] = []
        self._shapes: dict[int, gs.Tensor] = {}

    def _name(self, what: str) -> str:
        self.n += 1
        return self.fresh(f"{self.prefix}/{what}_{self.n}")

    def const(self, value) -> gs.Constant:
        return gs.Constant(self._name("const"), np.asarray(value))

    def op(self, op: str, inputs: Sequence, dtype=None, **attrs) -> gs.Variable:
        ins = [x if isinstance(x, gs.Tensor) else self.const(x) for x in inputs]
        out = gs.Variable(self._name(op.lower()), dtype=dtype if dtype is not None else self.dtype)
        self.nodes.append(gs.Node(op, self._name(op), dict(attrs), ins, [out]))
        return out

    def add(self, a, b):
        if _known(a) and _known(b):
            return np.asarray(a + b, dtype=self.dtype)
        return self.op("Add", [a, b])

    def mul(self, a, b):
        if _known(a) and _known(b):
            return np.asarray(a * b, dtype=self.dtype)
        if _known(b) and np.size(b) == 1 and int(b) == 1:
            return a
        return self.op("Mul", [a, b])

    def dim(self, tensor: gs.Tensor, d: int, static: int | None):
        """Dim `d` of `tensor` as a 0-d value: numpy when static, else Shape -> Gather (-> Cast)."""
        if static is not None:
            return np.array(static, dtype=self.dtype)
        key = id(tensor)
        if key not in self._shapes:
            self._shapes[key] = self.op("Shape", [tensor], dtype=np.int64)
        value = self.op(
            "Gather", [self._shapes[key], np.array(d, np.int64)], dtype=np.int64, axis=0
        )
        if self.dtype != np.int64:
            value = self.op("Cast", [value], to=int(onnx.TensorProto.INT32))
        return value


def _decompose(node: gs.Node, info: _TensorInfo, fresh: FreshNames) -> list[gs.Node] | str:
    """Detach `node` and return the nodes that compute its output instead; a reason when it cannot."""
    data, indices = node.inputs
    out = node.outputs[0]
    rank = _rank(node, info)
    dtype = info.dtype(indices)
    assert rank is not None and dtype is not None  # _why_not checked both
    axis = int(node.attrs.get("axis", 0)) % rank
    data_dims = info.dims(data) or [None] * rank
    index_dims = info.dims(indices) or info.dims(out) or [None] * rank
    n = data_dims[axis]
    if isinstance(indices, gs.Constant) and n is not None and indices.values.size:
        low, high = int(indices.values.min()), int(indices.values.max())
        if low < -n or high >= n:
            return f"constant indices span [{low}, {high}], outside [-{n}, {n}) on axis {axis}; fix the model"
    # new names start with the node's name (or its output's name) and are unique in the whole
    # model: node names need not be unique, and a branch's node may share the main graph's name
    b = _Builder(node.name or out.name, dtype, fresh)

    # stride_d = prod(D[d+1:]), built right to left; numpy while every factor is static
    strides: list = [None] * rank
    running = np.array(1, dtype=dtype)
    for d in range(rank - 1, -1, -1):
        strides[d] = running
        if d > 0:
            running = b.mul(running, b.dim(data, d, data_dims[d]))

    # the index along `axis`, normalised into [0, D_a)
    dim_a = b.dim(data, axis, data_dims[axis])
    if isinstance(indices, gs.Constant) and _known(dim_a):
        idx = indices.values.astype(dtype)
        idx = np.where(idx < 0, idx + dim_a, idx).astype(dtype)
    else:
        if _known(dim_a):
            lut = np.tile(np.arange(int(dim_a), dtype=dtype), 2)
        else:
            ramp = b.op("Range", [np.array(0, dtype), dim_a, np.array(1, dtype)])
            lut = b.op("Concat", [ramp, ramp], axis=0)
        shifted = b.add(
            indices.values.astype(dtype) if isinstance(indices, gs.Constant) else indices, dim_a
        )
        idx = b.op("Gather", [lut, shifted], axis=0)
    flat = b.mul(idx, strides[axis])

    # the other coordinates: position along dim d of indices, times stride_d
    for d in range(rank):
        if d == axis or index_dims[d] == 1:
            continue
        grid_shape = [1] * rank
        size = index_dims[d]
        if size is not None:
            grid_shape[d] = size
            coord = np.arange(size, dtype=dtype).reshape(grid_shape)
        else:
            grid_shape[d] = -1
            n_d = b.dim(indices, d, None)
            ramp = b.op("Range", [np.array(0, dtype), n_d, np.array(1, dtype)])
            coord = b.op("Reshape", [ramp, np.array(grid_shape, np.int64)])
        flat = b.add(flat, b.mul(coord, strides[d]))

    flat_data = (
        data
        if rank == 1
        else b.op("Reshape", [data, np.array([-1], np.int64)], dtype=info.dtype(data))
    )
    if _known(flat):
        flat = b.const(np.asarray(flat, dtype=dtype))
    node.outputs.clear()
    b.nodes.append(gs.Node("Gather", b._name("Gather"), {"axis": 0}, [flat_data, flat], [out]))
    node.inputs.clear()
    log.debug("decomposed GatherElements %s (axis %d, rank %d)", node.name, axis, rank)
    return b.nodes
