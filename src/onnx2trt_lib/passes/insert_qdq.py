"""`insert-qdq`: add INT8 QuantizeLinear/DequantizeLinear pairs in the form TensorRT's explicit quantization reads.

TensorRT 11 has no implicit INT8: a model runs INT8 only where the ONNX says so with Q/DQ
pairs. The form written here is the one TensorRT's Q/DQ placement guidance asks for and that
TensorRT-RTX's parser accepts:

* symmetric INT8: zero point 0, stored as an int8 scalar (a uint8 or non-zero zero point is refused);
* activations per tensor: scale = amax / 127, amax from `ranges` (a calibration cache);
* weights per output channel: scale[c] = max |w[c]| / 127, axis 0 for Conv, Gemm(transB=1)
  and a MatMul/Gemm B of shape [N, K]; axis 1 for ConvTranspose (weights are [C_in, C_out/g, ...])
  and for MatMul/Gemm(transB=0) B of shape [K, N];
* no int32 bias quantization: Conv/Gemm biases stay float (TensorRT fuses them itself);
* Q/DQ on the inputs of the weighted ops (Conv, ConvTranspose, Gemm, MatMul), never on their
  outputs, plus the identity input of a residual Add whose other input comes from a weighted
  op, so that TensorRT can fuse the Add into the convolution as an INT8 epilogue.

A node is quantized only when every quantizable input can be: an activation without a range
(or of a non-float type) leaves the node float and is reported as a skipped node. Inputs already
fed by a DequantizeLinear are taken as quantized, which also makes a second run a no-op.
Q/DQ pairs of one tensor are shared by all its quantized consumers that quantize it along the
same axis (a weight read by MatMul and by Gemm(transB=1) gets one pair per output-channel axis).
A float16 model needs opset 19, where QuantizeLinear first takes float16.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import PassError
from ._infra import PassResult, SkippedNode, result
from .fold_constants import RANDOM_OPS

log = logging.getLogger(__name__)

INT8_MAX = 127.0
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WEIGHTED_OPS = frozenset(DEFAULT_OP_TYPES)
_FLOAT_TYPES = (np.float32, np.float16)
MIN_OPSET = 13  # per-channel QuantizeLinear (axis attribute) needs opset 13
MIN_OPSET_FLOAT16 = 19  # QuantizeLinear takes float16 input from opset 19


def _quantizable_slots(node: gs.Node) -> tuple[int, ...]:
    """Input indices that carry data to quantize; biases (Conv input 2, Gemm C) are not listed."""
    if node.op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return (0, 1)
    if node.op == "Add":
        return (0, 1)
    # any other configured op type: all of its inputs
    return tuple(range(len(node.inputs)))


def weight_axis(node: gs.Node, slot: int, shape: tuple[int, ...]) -> int | None:
    """The output-channel axis of a constant weight input, or None for per-tensor quantization."""
    if slot != 1 or len(shape) < 2:
        return None
    if node.op == "Conv":
        return 0
    if node.op == "ConvTranspose":
        # weights [C_in, C_out/group, k...]: axis 1 is the output channel only when group == 1
        return 1 if int(node.attrs.get("group", 1)) == 1 else None
    if node.op == "Gemm":
        return 0 if int(node.attrs.get("transB", 0)) else 1
    if node.op == "MatMul" and len(shape) == 2:
        return 1  # B is [K, N]: N output channels
    return None


def weight_scale(values: np.ndarray, axis: int | None) -> np.ndarray:
    """max |w| / 127 per channel along `axis` (a scalar when None); all-zero channels get scale 1."""
    data = np.abs(values.astype(np.float64))
    if axis is None:
        amax = np.asarray(data.max(initial=0.0))
    else:
        amax = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1).max(axis=1, initial=0.0)
    scale = (amax / INT8_MAX).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def activation_scale(amax: float) -> np.ndarray:
    return np.asarray(amax / INT8_MAX if amax > 0 else 1.0, dtype=np.float32)


class InsertQdqPass:
    """Insert symmetric INT8 Q/DQ pairs before weighted ops (and residual Adds) from per-tensor ranges."""

    name = "insert-qdq"
    changes_values = True  # on purpose: fix's equivalence check does not apply
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES + ("Add",)

    def __init__(
        self,
        *,
        ranges: Mapping[str, float] | None = None,
        op_types: Collection[str] | None = None,
        exclude_nodes: Collection[str] | None = None,
        exclude_tensors: Collection[str] | None = None,
        residual_add: bool | None = None,
        per_channel: bool | None = None,
    ) -> None:
        # ranges: tensor name -> amax (max |x| seen in calibration); None = no activation ranges.
        self.ranges = {str(k): float(v) for k, v in (ranges or {}).items()}
        bad = {k: v for k, v in self.ranges.items() if not math.isfinite(v) or v < 0}
        if bad:
            first = next(iter(bad))
            raise PassError(
                f"insert-qdq: {len(bad)} range(s) are negative or not finite (e.g. {first!r}: {bad[first]}); "
                "recalibrate or drop those tensors"
            )
        # the class attribute `op_types` lists what the pass can look at; this is what it will
        self.quantize_ops = tuple(op_types) if op_types is not None else DEFAULT_OP_TYPES
        self.exclude_nodes = frozenset(exclude_nodes or ())
        self.exclude_tensors = frozenset(exclude_tensors or ())
        self.residual_add = True if residual_add is None else bool(residual_add)
        self.per_channel = True if per_channel is None else bool(per_channel)

    # --- planning ---------------------------------------------------------------------------

    def _input_problem(self, tensor: gs.Tensor) -> str | None:
        """Why `tensor` cannot be quantized, or None when it can."""
        if tensor.name in self.exclude_tensors:
            return f"input {tensor.name!r} is excluded"
        values = constant_values(tensor)
        if values is not None:
            if values.dtype not in _FLOAT_TYPES:
                return f"constant input {tensor.name!r} is {values.dtype}, not float"
            return None
        if tensor.dtype is not None and np.dtype(tensor.dtype) not in _FLOAT_TYPES:
            return f"input {tensor.name!r} is {np.dtype(tensor.dtype)}, not float"
        if tensor.name not in self.ranges:
            return f"no range for input {tensor.name!r} in the calibration data"
        return None

    def _plan(self, graph: gs.Graph) -> tuple[list[tuple[gs.Node, list[int]]], list[SkippedNode]]:
        plan: list[tuple[gs.Node, list[int]]] = []
        skipped: list[SkippedNode] = []
        quantized_weighted: set[int] = set()
        for node in graph.nodes:
            if node.op not in self.quantize_ops:
                continue
            label = node.name or f"<{node.op} -> {node.outputs[0].name if node.outputs else '?'}>"
            if node.name in self.exclude_nodes:
                skipped.append(SkippedNode(label, node.op, "excluded by name"))
                continue
            slots = [
                i for i in _quantizable_slots(node) if i < len(node.inputs) and node.inputs[i].name
            ]
            if all(_fed_by_dq(node.inputs[i]) for i in slots):
                quantized_weighted.add(id(node))
                continue  # already quantized (by us or by the exporter)
            todo = [i for i in slots if not _fed_by_dq(node.inputs[i])]
            problems = [p for i in todo if (p := self._input_problem(node.inputs[i]))]
            if problems:
                skipped.append(SkippedNode(label, node.op, "; ".join(problems) + "; left in float"))
                continue
            plan.append((node, todo))
            quantized_weighted.add(id(node))
        if self.residual_add:
            plan += self._residual_adds(graph, quantized_weighted, skipped)
        return plan, skipped

    def _residual_adds(
        self, graph: gs.Graph, quantized: set[int], skipped: list[SkippedNode]
    ) -> list[tuple[gs.Node, list[int]]]:
        """Adds with one input from a quantized weighted op: Q/DQ the other (identity) input."""
        plan = []
        memo: dict[int, bool] = {}
        for node in graph.nodes:
            if node.op != "Add" or len(node.inputs) != 2 or node.name in self.exclude_nodes:
                continue
            a, b = node.inputs
            if computed_from_constants(a, memo) or computed_from_constants(b, memo):
                continue  # a bias, not a residual branch
            from_conv = [_producer_is(t, quantized) for t in (a, b)]
            if not any(from_conv) or any(_fed_by_dq(t) for t in (a, b)):
                continue
            other = 1 if from_conv[0] else 0
            problem = self._input_problem(node.inputs[other])
            if problem:
                label = node.name or f"<Add -> {node.outputs[0].name}>"
                skipped.append(
                    SkippedNode(label, "Add", f"residual input: {problem}; left in float")
                )
                continue
            plan.append((node, [other]))
        return plan

    # --- rewriting --------------------------------------------------------------------------

    def run(self, graph: gs.Graph) -> PassResult:
        plan, skipped = self._plan(graph)
        if plan and graph.opset < MIN_OPSET:
            raise PassError(
                f"insert-qdq: the model's opset {graph.opset} is below {MIN_OPSET}, which per-channel "
                "QuantizeLinear needs; convert it first (onnx.version_converter.convert_version(model, 13))"
            )
        half = next(
            (
                node.inputs[i].name
                for node, slots in plan
                for i in slots
                if _data_dtype(node.inputs[i]) == np.float16
            ),
            None,
        )
        if half is not None and graph.opset < MIN_OPSET_FLOAT16:
            raise PassError(
                f"insert-qdq: {half!r} is float16 and the model's opset {graph.opset} is below {MIN_OPSET_FLOAT16}, "
                "the first where QuantizeLinear takes float16; convert it first "
                f"(onnx.version_converter.convert_version(model, {MIN_OPSET_FLOAT16})) or quantize the float32 model"
            )
        shared: dict[
            tuple[str, int | None], gs.Variable
        ] = {}  # (tensor name, axis) -> its dequantized twin
        counts = {
            "quantized_nodes": 0,
            "activation_qdq": 0,
            "weight_qdq": 0,
            "residual_add_inputs": 0,
        }
        used = set(graph.tensors()) | {n.name for n in graph.nodes}  # names in use
        for node, slots in plan:
            for slot in slots:
                tensor = node.inputs[slot]
                values = constant_values(tensor)
                axis = (
                    weight_axis(node, slot, tuple(values.shape))
                    if values is not None and self.per_channel
                    else None
                )
                twin = shared.get((tensor.name, axis))
                if twin is None:
                    if values is not None:
                        scale = weight_scale(values, axis)
                        counts["weight_qdq"] += 1
                    else:
                        scale = activation_scale(self.ranges[tensor.name])
                        counts["activation_qdq"] += 1
                    twin = _add_qdq(graph, tensor, scale, axis, used)
                    shared[(tensor.name, axis)] = twin
                node.inputs[slot] = twin
                counts["residual_add_inputs"] += int(node.op == "Add")
            if node.op != "Add":
                counts["quantized_nodes"] += 1
        if plan:
            log.info("insert-qdq: %s; %d node(s) left in float", counts, len(skipped))
        return result(self.name, counts, skipped)


def activations_to_quantize(
    graph: gs.Graph, *, op_types: Collection[str] | None = None, residual_add: bool = True
) -> list[str]:
    """Names of the activations this pass would quantize if every tensor had a range, in plan order.

    A TensorRT 11 (Q/DQ) calibration needs ranges for these only, a small share of all activations.
    """
    planner = InsertQdqPass(
        ranges=dict.fromkeys(graph.tensors(), 1.0), op_types=op_types, residual_add=residual_add
    )
    plan, _ = planner._plan(graph)
    names: dict[str, None] = {}
    for node, slots in plan:
        for slot in slots:
            if constant_values(node.inputs[slot]) is None:
                names.setdefault(node.inputs[slot].name)
    return list(names)


def constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    """The values of an initializer or of a Constant node's output; None for data."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    if tensor.inputs and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return value.values
    return None


def computed_from_constants(tensor: gs.Tensor, memo: dict[int, bool] | None = None) -> bool:
    """True for a constant, or a tensor that only constants feed: no data flows into it.

    onnx's version converter writes Paddle's broadcast biases as Reshape(Constant, Constant);
    such an Add input is a bias, not a residual branch that needs a calibrated range.
    """
    memo = {} if memo is None else memo
    stack = [tensor]
    while stack:
        current = stack[-1]
        key = id(current)
        if key in memo:
            stack.pop()
            continue
        if constant_values(current) is not None:
            memo[key] = True
            stack.pop()
            continue
        producer = current.inputs[0] if current.inputs else None
        if (
            producer is None
            or producer.op in RANDOM_OPS
            or any(isinstance(v, gs.Graph) for v in producer.attrs.values())
        ):
            memo[key] = False
            stack.pop()
            continue
        pending = [t for t in producer.inputs if t.name and id(t) not in memo]
        if pending:
            stack.extend(pending)
            continue
        memo[key] = all(memo[id(t)] for t in producer.inputs if t.name)
        stack.pop()
    return memo[id(tensor)]


def _data_dtype(tensor: gs.Tensor) -> np.dtype:
    """The element type of a constant's values or of a tensor (float32 when unknown)."""
    values = constant_values(tensor)
    if values is not None:
        return np.dtype(values.dtype)
    return np.dtype(tensor.dtype if tensor.dtype is not None else np.float32)


def _fed_by_dq(tensor: gs.Tensor) -> bool:
    return bool(tensor.inputs) and tensor.inputs[0].op == "DequantizeLinear"


def _producer_is(tensor: gs.Tensor, node_ids: set[int]) -> bool:
    return (
        bool(tensor.inputs)
        and id(tensor.inputs[0]) in node_ids
        and tensor.inputs[0].op in WEIGHTED_OPS
    )


def _add_qdq(
    graph: gs.Graph, tensor: gs.Tensor, scale: np.ndarray, axis: int | None, names: set[str]
) -> gs.Variable:
    """tensor -> QuantizeLinear -> DequantizeLinear -> returned variable (same dtype and shape).

    `names` holds every tensor and node name in use; the new names are added to it.
    """
    base = tensor.name

    def fresh(suffix: str) -> str:
        name, k = f"{base}{suffix}", 1
        while name in names:
            name, k = f"{base}{suffix}_{k}", k + 1
        names.add(name)
        return name

    dtype = _data_dtype(tensor)
    scale_c = gs.Constant(fresh("_scale"), scale.astype(dtype))
    zero = np.zeros(scale.shape, dtype=np.int8)
    zp_c = gs.Constant(fresh("_zero_point"), zero)
    attrs = {"axis": int(axis)} if axis is not None else {}
    q_out = gs.Variable(fresh("_quantized"), dtype=np.int8, shape=tensor.shape)
    dq_out = gs.Variable(fresh("_dequantized"), dtype=dtype, shape=tensor.shape)
    graph.nodes.append(
        gs.Node(
            "QuantizeLinear",
            fresh("_QuantizeLinear"),
            dict(attrs),
            [tensor, scale_c, zp_c],
            [q_out],
        )
    )
    graph.nodes.append(
        gs.Node(
            "DequantizeLinear",
            fresh("_DequantizeLinear"),
            dict(attrs),
            [q_out, scale_c, zp_c],
            [dq_out],
        )
    )
    return dq_out
