"""`to-fp16`: convert a float32 model to float16, keeping overflow-prone or listed nodes in float32.

TensorRT 11 has no FP16 builder flag: a model runs in FP16 when its tensors are FP16. This pass
decides per node (what ModelOpt's AutoCast does, done our way):

* a node stays float32 when its op type is in `keep_ops`, its name in `keep_nodes`, one of its
  float initializers (or Constant node values) holds a value above `max_initializer` (default:
  FP16's max, 65504; a Constant node holding one stays float32 too), one of
  its input/output tensors has a measured amax (`ranges`, e.g. from calibration) above
  `max_activation` (default 8188, FP16 max / 8: headroom for sums inside kernels), or its op
  cannot take FP16 in ONNX (NonMaxSuppression, random generators, Q/DQ, Range, Celu, control
  flow; IsInf before opset 20, CumSum before 14);
* every other node that touches a float32 tensor becomes float16: its float32 outputs and
  initializers turn FP16, `Cast(to=FLOAT)` becomes `Cast(to=FLOAT16)`, ConstantOfShape and
  Constant values turn FP16 (a ConstantOfShape without a value gets an FP16 zero); inputs whose
  type ONNX pins to float32 (Resize roi/scales, Upsample scales) stay float32, and so do the
  initializers and Constant nodes that feed them;
* Casts are inserted only where a float16 and a float32 region meet, one per tensor and
  direction, and never on the output of another Cast (the Cast's input is used instead), so no
  Cast->Cast chains appear;
* If/Loop/Scan bodies stay float32: an outer tensor a body reads and this pass made FP16 is
  read through a Cast back to float32, placed in the outer graph;
* graph inputs and outputs stay float32 with `keep_io_types`, else they become float16.

Tensor types must be known: missing ones are filled with ONNX type inference. Casts between two
different float types are precision boundaries and are left alone, which makes a second run a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .._weights import infer_graph_shapes
from ..errors import PassError
from ._infra import PassResult, SkippedNode, result
from ._names import FreshNames

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
DEFAULT_MAX_ACTIVATION = FP16_MAX / 8
F32, F16 = np.dtype(np.float32), np.dtype(np.float16)
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
# ops that cannot run in FP16 in ONNX (float-only inputs, dtype attributes, subgraphs)
ALWAYS_FLOAT32 = frozenset(
    {
        "NonMaxSuppression",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "EyeLike",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "Range",
        "Celu",
        "TfIdfVectorizer",
        "If",
        "Loop",
        "Scan",
    }
)
# ops that take FP16 only from some opset on: op -> first opset whose schema lists float16
FLOAT16_SINCE = {"IsInf": 20, "CumSum": 14}
# (op, input index) whose type ONNX fixes to float32 whatever the data type
PINNED_FLOAT32_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})


def _values(constant: gs.Constant) -> np.ndarray:
    """A constant's values, without keeping a lazily-held tensor's array in the graph (reading
    `.values` would: the weights of a 2 GiB model would then sit in memory twice)."""
    lazy = constant._values
    return lazy.load() if isinstance(lazy, gs.ir.tensor.LazyValues) else constant.values


def _dtype(tensor: gs.Tensor) -> np.dtype | None:
    try:
        return np.dtype(tensor.dtype) if tensor.dtype is not None else None
    except TypeError:  # bfloat16 and other onnx-only types
        return None


def _float32_peak(tensor: gs.Tensor) -> float | None:
    """max |value| of a float32 initializer or of a Constant/ConstantOfShape node's float32 value; None otherwise."""
    values = None
    if isinstance(tensor, gs.Constant):
        values = _values(tensor)
    elif tensor.inputs and tensor.inputs[0].op in ("Constant", "ConstantOfShape"):
        attrs = tensor.inputs[0].attrs
        value = attrs.get("value")
        if isinstance(value, gs.Constant):
            values = value.values
        elif "value_float" in attrs or "value_floats" in attrs:
            values = np.asarray(
                attrs.get("value_float", attrs.get("value_floats")), dtype=np.float32
            )
    if values is None or np.dtype(values.dtype) != F32 or not values.size:
        return None
    return float(np.max(np.abs(values)))


def _is_boundary_cast(node: gs.Node) -> bool:
    """A Cast from one float type to another: a precision boundary, never converted."""
    if node.op != "Cast" or not node.inputs or not node.outputs:
        return False
    a, b = _dtype(node.inputs[0]), _dtype(node.outputs[0])
    return a in _FLOATS and b in _FLOATS and a != b


class ConvertToFp16Pass:
    """Convert float32 nodes to float16, keeping risky or listed nodes float32 behind boundary Casts."""

    name = "to-fp16"
    changes_values = True  # on purpose: fix's equivalence check does not apply
    op_types: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        keep_io_types: bool | None = None,
        keep_ops: Collection[str] | None = None,
        keep_nodes: Collection[str] | None = None,
        ranges: Mapping[str, float] | None = None,
        max_activation: float | None = None,
        max_initializer: float | None = None,
    ) -> None:
        self.keep_io_types = bool(keep_io_types)
        self.keep_ops = frozenset(keep_ops or ())
        self.keep_nodes = frozenset(keep_nodes or ())
        self.ranges = {str(k): float(v) for k, v in (ranges or {}).items()}
        self.max_activation = (
            DEFAULT_MAX_ACTIVATION if max_activation is None else float(max_activation)
        )
        self.max_initializer = FP16_MAX if max_initializer is None else float(max_initializer)
        if not 0 < self.max_initializer <= FP16_MAX:
            raise PassError(
                f"to-fp16: max_initializer {self.max_initializer} must be in (0, {FP16_MAX}]"
            )

    # --- deciding -----------------------------------------------------------------------------

    def _range(self, tensor: gs.Tensor) -> float | None:
        value = self.ranges.get(tensor.name)
        if (
            value is None
        ):  # a tensor we renamed on an earlier run: its range sits on the Cast output
            for consumer in tensor.outputs:
                if _is_boundary_cast(consumer) and consumer.outputs[0].name in self.ranges:
                    return self.ranges[consumer.outputs[0].name]
        return value

    def _peak(self, tensor: gs.Tensor) -> float | None:
        """`_float32_peak`, once per tensor and run: a weight is read from its proto each time
        (the graph keeps no float32 copy), and a 2 GiB model's weights are slow to scan."""
        key = id(tensor)
        if key not in self._peaks:
            self._peaks[key] = _float32_peak(tensor)
        return self._peaks[key]

    def _keep_reason(self, node: gs.Node, opset: int) -> str | None:
        if node.op in ALWAYS_FLOAT32:
            return f"{node.op} has no FP16 form in ONNX"
        if opset < FLOAT16_SINCE.get(node.op, 0):
            return f"{node.op} takes FP16 only from opset {FLOAT16_SINCE[node.op]} (the model's is {opset})"
        if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            return "has subgraphs"
        if node.op in self.keep_ops:
            return f"op type {node.op} is kept by request"
        if node.name and node.name in self.keep_nodes:
            return "kept by request"
        for t in node.inputs:
            peak = self._peak(t)
            if peak is not None and not peak <= self.max_initializer:
                return f"initializer {t.name!r} holds {peak:.6g} > {self.max_initializer:g}"
        if (
            node.op in ("Constant", "ConstantOfShape") and node.outputs
        ):  # its value would turn inf in FP16
            peak = self._peak(node.outputs[0])
            if peak is not None and not peak <= self.max_initializer:
                return (
                    f"constant {node.outputs[0].name!r} holds {peak:.6g} > {self.max_initializer:g}"
                )
        for t in (*node.inputs, *node.outputs):
            amax = self._range(t) if t.name else None
            if amax is not None and amax > self.max_activation:
                return (
                    f"tensor {t.name!r} reaches {amax:.6g} > {self.max_activation:g} in calibration"
                )
        return None

    def _fill_types(self, graph: gs.Graph) -> None:
        """Fill unknown tensor types with ONNX type inference (types only; no shape is changed)."""
        unknown = [
            t
            for n in graph.nodes
            for t in n.outputs
            if isinstance(t, gs.Variable) and t.dtype is None
        ]
        if not unknown:
            return
        try:
            inferred = infer_graph_shapes(graph, strict_mode=False)
        except Exception as exc:
            raise PassError(
                f"to-fp16: tensor types are unknown and ONNX type inference failed: {exc}"
            ) from None
        elem = {
            v.name: v.type.tensor_type.elem_type
            for v in inferred.graph.value_info
            if v.type.HasField("tensor_type")
        }
        for t in unknown:
            code = elem.get(t.name, 0)
            if code:
                t.dtype = onnx.helper.tensor_dtype_to_np_dtype(code)
        still = [t.name for t in unknown if t.dtype is None]
        if still:
            raise PassError(
                f"to-fp16: type of {len(still)} tensor(s) unknown (e.g. {still[0]!r}); run infer-shapes or fix the model"
            )

    # --- rewriting ----------------------------------------------------------------------------

    def run(self, graph: gs.Graph) -> PassResult:
        self._peaks: dict[int, float | None] = {}  # this run's; the tensors die with the graph
        self._fill_types(graph)
        tensors = graph.tensors()
        fresh = FreshNames(graph)
        fp32 = {id(t) for t in tensors.values() if isinstance(t, gs.Variable) and _dtype(t) == F32}
        counts = {"converted_nodes": 0, "initializers": 0, "casts": 0, "io": 0, "casts_removed": 0}
        skipped: list[SkippedNode] = []
        # Constant nodes feeding a pinned input stay float32, as initializers there do (0.1 is not an FP16)
        pinned = {
            id(t.inputs[0])
            for n in graph.nodes
            for i, t in enumerate(n.inputs)
            if (n.op, i) in PINNED_FLOAT32_INPUTS and t.inputs and t.inputs[0].op == "Constant"
        }
        plan: list[tuple[gs.Node, bool]] = []  # (node, to fp16?)
        for node in graph.nodes:
            if _is_boundary_cast(node) or id(node) in pinned:
                continue
            touches = any(
                id(t) in fp32 or isinstance(t, gs.Constant) and _dtype(t) == F32
                for t in node.inputs
            )
            touches = touches or any(id(t) in fp32 for t in node.outputs)
            if not touches:
                continue
            reason = self._keep_reason(node, graph.opset)
            if reason:
                skipped.append(
                    SkippedNode(node.name or f"<{node.op}>", node.op, reason + "; kept in float32")
                )
            plan.append((node, reason is None))

        # 1. graph inputs and converted nodes' outputs, attributes, initializers
        if not self.keep_io_types:
            for t in graph.inputs:
                if id(t) in fp32:
                    t.dtype = F16
                    counts["io"] += 1
        f16_constants: dict[int, gs.Constant] = {}
        for node, to_half in plan:
            if not to_half:
                continue
            changed = False
            for t in node.outputs:
                if id(t) in fp32:
                    t.dtype = F16
                    changed = True
            changed |= _convert_attributes(node)
            for i, t in enumerate(node.inputs):
                if (
                    isinstance(t, gs.Constant)
                    and _dtype(t) == F32
                    and (node.op, i) not in PINNED_FLOAT32_INPUTS
                ):
                    if id(t) not in f16_constants:
                        f16_constants[id(t)] = gs.Constant(
                            fresh(f"{t.name}_fp16"), _values(t).astype(np.float16)
                        )
                        counts["initializers"] += 1
                    node.inputs[i] = f16_constants[id(t)]
                    changed = True
            counts["converted_nodes"] += int(changed)

        # 2. Casts where a consumer expects another float type than its input now has
        casts: dict[tuple[int, str], gs.Variable] = {}

        def as_type(t: gs.Variable, want: np.dtype) -> gs.Variable:
            producer = t.inputs[0] if t.inputs else None
            if (
                producer is not None
                and producer.op == "Cast"
                and _dtype(producer.inputs[0]) == want
            ):
                return producer.inputs[0]  # undo a Cast instead of stacking a second one
            key = (id(t), want.name)
            if key not in casts:
                out = gs.Variable(
                    fresh(f"{t.name}_{'fp16' if want == F16 else 'fp32'}"),
                    dtype=want,
                    shape=t.shape,
                )
                to = onnx.TensorProto.FLOAT16 if want == F16 else onnx.TensorProto.FLOAT
                graph.nodes.append(
                    gs.Node("Cast", fresh(f"{t.name}_Cast_{want.name}"), {"to": to}, [t], [out])
                )
                casts[key] = out
                counts["casts"] += 1
            return casts[key]

        for node, to_half in plan:
            for i, t in enumerate(node.inputs):
                if not isinstance(t, gs.Variable) or id(t) not in fp32:
                    continue
                want = F16 if to_half and (node.op, i) not in PINNED_FLOAT32_INPUTS else F32
                if _dtype(t) != want:
                    node.inputs[i] = as_type(t, want)
        # bodies of If/Loop/Scan stay float32: outer tensors they read (not listed in the node's
        # inputs) and that became FP16 are read through a Cast back to float32
        for node in list(graph.nodes):
            for inner in (n for body in _subgraphs(node) for n in body.nodes):
                for i, t in enumerate(inner.inputs):
                    if isinstance(t, gs.Variable) and id(t) in fp32 and _dtype(t) != F32:
                        inner.inputs[i] = as_type(t, F32)

        if not self.keep_io_types:  # outputs made FP16 by their producer in step 1
            counts["io"] += sum(1 for t in graph.outputs if id(t) in fp32 and _dtype(t) == F16)
        # 3. graph outputs keep their name; the producer's tensor is renamed when a Cast must sit between
        want_out = F32 if self.keep_io_types else F16
        for k, t in enumerate(graph.outputs):
            if id(t) not in fp32 or _dtype(t) == want_out or t in graph.inputs:
                continue
            cast = t.inputs[0] if t.inputs and t.inputs[0].op == "Cast" else None
            src = cast.inputs[0] if cast is not None else None
            if (
                cast is not None
                and src is not None
                and _dtype(src) == want_out
                and src.inputs
                and src not in graph.outputs
            ):
                # the output already comes through a Cast from the wanted type: drop that Cast
                # and let the Cast's source produce the output under its name
                producer = src.inputs[0]
                _redirect_consumers(src, t)
                cast.inputs.clear()
                cast.outputs.clear()
                graph.nodes.remove(cast)
                producer.outputs[producer.outputs.index(src)] = t
                t.dtype = want_out
                counts["io"] += 1
                counts["casts_removed"] += 1
                continue
            t_dtype = _dtype(t)
            assert t_dtype is not None  # a tensor in fp32 has a known float type
            inner = gs.Variable(fresh(f"{t.name}_{t_dtype.name}"), dtype=t_dtype, shape=t.shape)
            producer = t.inputs[0]
            producer.outputs[producer.outputs.index(t)] = inner
            _redirect_consumers(t, inner)
            t.dtype = want_out
            to = onnx.TensorProto.FLOAT16 if want_out == F16 else onnx.TensorProto.FLOAT
            graph.nodes.append(
                gs.Node("Cast", fresh(f"{t.name}_Cast_{want_out.name}"), {"to": to}, [inner], [t])
            )
            graph.outputs[k] = t
            counts["casts"] += 1
            counts["io"] += 1
        # 4. Casts that became no-ops (e.g. a float32 model's Cast(to=FLOAT), or a boundary of an
        #    earlier run whose sides are now both FP16): consumers read the Cast's input instead
        outputs = set(map(id, graph.outputs))
        for node in list(graph.nodes):
            if node.op != "Cast" or not node.inputs or id(node.outputs[0]) in outputs:
                continue
            src, dst = node.inputs[0], node.outputs[0]
            if _dtype(src) in _FLOATS and _dtype(src) == _dtype(dst):
                _redirect_consumers(dst, src)
                node.outputs.clear()
                node.inputs.clear()
                graph.nodes.remove(node)
                counts["casts_removed"] += 1
        if any(counts.values()):
            log.info("to-fp16: %s; %d node(s) kept in float32", counts, len(skipped))
        self._peaks = {}
        return result(self.name, counts, skipped)


def _redirect_consumers(old: gs.Tensor, new: gs.Tensor) -> None:
    """Every node that reads `old` reads `new` instead (graph outputs are handled by the caller)."""
    for consumer in list(old.outputs):
        for i, x in enumerate(consumer.inputs):
            if x is old:
                consumer.inputs[i] = new


def _subgraphs(node: gs.Node):
    """Every graph nested in `node`'s attributes, at any depth."""
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            yield value
            yield from value.subgraphs(recursive=True)


def _convert_attributes(node: gs.Node) -> bool:
    """FP16 versions of attributes that fix a float32 output type; True when one changed."""
    if node.op == "Cast" and node.attrs.get("to") == onnx.TensorProto.FLOAT:
        node.attrs["to"] = onnx.TensorProto.FLOAT16
        return True
    if node.op == "ConstantOfShape" and "value" not in node.attrs:  # the default is a float32 zero
        node.attrs["value"] = gs.Constant(node.outputs[0].name + "_value", np.zeros(1, np.float16))
        return True
    if node.op in ("Constant", "ConstantOfShape"):
        value = node.attrs.get("value")
        if isinstance(value, gs.Constant) and _dtype(value) == F32:
            node.attrs["value"] = gs.Constant(value.name, value.values.astype(np.float16))
            return True
        for key in ("value_float", "value_floats"):
            if key in node.attrs:
                data = np.asarray(node.attrs.pop(key), dtype=np.float16)
                node.attrs["value"] = gs.Constant(node.outputs[0].name + "_value", data)
                return True
    return False
