"""Which tensors of a model are calibrated: graph inputs fed at run time, float activations,
the subset a Q/DQ model needs, and tensors that only rearrange another's values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ..errors import UsageError
from .dataset import InputSpec

FLOAT_ONNX_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
)
# ops whose output holds exactly the values of their data input, rearranged: same histogram
_SAME_VALUES_OPS = frozenset(
    {
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Identity",
        "DepthToSpace",
        "SpaceToDepth",
    }
)


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """Graph inputs that are fed at run time (initializers listed as inputs are not)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tensor_type.shape.dim
        )
        dtype = (
            np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
            if tensor_type.elem_type
            else np.dtype(np.float32)
        )
        specs.append(InputSpec(value.name, dims, dtype))
    return specs


def quantizable_tensors(
    model: onnx.ModelProto,
    *,
    include_inputs: bool = True,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Names of candidate activation tensors, in graph order.

    Node outputs computed only from constants are left out (TensorRT folds them: they are
    weights, not activations). Types are settled later by ONNX Runtime, which reports the
    element type of every output; non-float ones are dropped there.
    """
    graph = model.graph
    constant = {init.name for init in graph.initializer}
    known_types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in (*graph.input, *graph.value_info, *graph.output)
    }
    names: list[str] = []
    if include_inputs:
        for spec in model_inputs(model):
            if spec.is_float:
                names.append(spec.name)
    for node in graph.node:
        inputs = [name for name in (*node.input, *_outer_references(node)) if name]
        if node.op_type == "Constant" or (inputs and all(name in constant for name in inputs)):
            constant.update(o for o in node.output if o)
            continue
        for out in node.output:
            if not out:
                continue
            elem = known_types.get(out, 0)
            if elem and elem not in FLOAT_ONNX_TYPES:
                continue
            names.append(out)
    if include is not None:
        wanted = set(include)
        missing = sorted(wanted - set(names))
        if missing:
            raise UsageError(
                f"tensor(s) {', '.join(missing[:5])} are not float activations of the model"
            )
        names = [n for n in names if n in wanted]
    drop = set(exclude)
    return [n for n in names if n not in drop]


def _outer_references(node: onnx.NodeProto) -> set[str]:
    """Outer-scope tensors that the subgraphs of an If/Loop/Scan node read (not in node.input).

    An If with a constant condition (or a Loop with constant trip count and initial values)
    still computes from the activations its branches capture: not a constant.
    """
    used: set[str] = set()
    for attr in node.attribute:
        for sub in (*([attr.g] if attr.HasField("g") else ()), *attr.graphs):
            local = {v.name for v in (*sub.input, *sub.initializer)}
            local.update(o for n in sub.node for o in n.output)
            for inner in sub.node:
                used.update(
                    n for n in (*inner.input, *_outer_references(inner)) if n and n not in local
                )
            used.update(o.name for o in sub.output if o.name not in local)
    return used


def qdq_tensors(model: onnx.ModelProto) -> set[str]:
    """The activations insert-qdq would quantize (inputs of Conv/Gemm/MatMul, residual Adds)."""
    import onnx_graphsurgeon as gs

    from ..passes.insert_qdq import activations_to_quantize

    return set(activations_to_quantize(gs.import_onnx(model)))


def value_aliases(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, str]:
    """{tensor: the collected tensor whose values it rearranges} (Reshape/Transpose/... chains).

    Such a tensor's histogram equals its source's, so it is copied instead of fetched from ONNX
    Runtime and binned again.
    """
    wanted = set(names)
    source: dict[str, str] = {}
    for node in model.graph.node:
        if (
            node.op_type in _SAME_VALUES_OPS
            and node.input
            and node.input[0]
            and len(node.output) == 1
        ):
            if node.output[0] in wanted:
                source[node.output[0]] = node.input[0]
    aliases = {}
    for name in source:
        root, hops = name, 0
        while root in source and hops <= len(source):
            root, hops = source[root], hops + 1
        if root in wanted and root not in source:
            aliases[name] = root
    return aliases
