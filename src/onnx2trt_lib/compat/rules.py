"""The lint rules: one small function per thing a TensorRT ONNX parser refuses.

A rule looks at one node and the target's row of data (targets.py) and returns a message
when the parser would refuse the node, else None. The rule name is stable (scripts and
`--json` consumers key on it); the pass name says what `onnx2trt fix` runs to repair it
(None: no automatic fix).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..passes.fold_constants import RANDOM_OPS
from ..passes.insert_qdq import constant_values
from .targets import INPUT_FORM_SINCE, Target, onnx_op_first_opsets

_DEFAULT_DOMAINS = (None, "", "ai.onnx")


@dataclass(frozen=True)
class Hit:
    """What a rule reports: the message and the pass that fixes it (None = no automatic fix)."""

    message: str
    fix_pass: str | None


@dataclass(frozen=True)
class Rule:
    name: str
    op_types: tuple[str, ...]  # empty: every op
    check: Callable[[gs.Node, Target, int], Hit | None]  # (node, target, opset)


# --- helpers ------------------------------------------------------------------------


def _attr_str(node: gs.Node, name: str, default: str) -> str:
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node: gs.Node, index: int) -> gs.Tensor | None:
    """The node's input `index`, or None when absent or the empty name (optional input)."""
    if index >= len(node.inputs):
        return None
    tensor = node.inputs[index]
    if tensor is None or (isinstance(tensor, gs.Variable) and not tensor.name):
        return None
    if _is_empty_constant(tensor):
        return None  # opset-11 exporters write an empty constant for "no roi / no scales"
    return tensor


def _is_empty_constant(tensor: gs.Tensor) -> bool:
    if isinstance(tensor, gs.Constant):
        return tensor.shape is not None and 0 in tuple(tensor.shape)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        return (
            isinstance(value, gs.Constant) and value.shape is not None and 0 in tuple(value.shape)
        )
    return False


def _is_constant(tensor: gs.Tensor) -> bool:
    """A constant the parser sees as weights: an initializer or a Constant node's output."""
    if isinstance(tensor, gs.Constant):
        return True
    return len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant"


def _static_shape(tensor: gs.Tensor) -> bool:
    shape = tensor.shape
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _ancestors(tensor: gs.Tensor):
    """Yield (tensor, producer or None) walking up from `tensor`; Shape/Size stop the walk.

    Shape and Size read only a tensor's dimensions, never its values, so what lies above
    them does not make the result depend on run-time data.
    """
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        producer = t.inputs[0] if t.inputs else None
        yield t, producer
        if producer is None or _is_constant(t) or producer.op in ("Shape", "Size"):
            continue
        stack.extend(x for x in producer.inputs if x is not None and x.name)


def _is_foldable(tensor: gs.Tensor) -> bool:
    """True when fold-constants can turn `tensor` into a constant.

    Every value it depends on must be constant; Shape/Size of a tensor with a static shape
    count as constant (onnx-graphsurgeon folds them). A graph input, a dynamic shape, a
    random op or a node outside the default domain stops it.
    """
    for t, producer in _ancestors(tensor):
        if _is_constant(t):
            continue
        if producer is None:  # graph input: only known at run time
            return False
        if producer.op in ("Shape", "Size"):
            if not _static_shape(producer.inputs[0]):
                return False
            continue
        if producer.op in RANDOM_OPS or producer.domain not in _DEFAULT_DOMAINS:
            return False
        if producer.op in ("Loop", "If", "Scan"):
            return False
    return True


def _reads_graph_input_values(tensor: gs.Tensor) -> bool:
    """True when `tensor` is computed from a float graph input's values (not just its shape).

    Integer graph inputs are left out: TensorRT takes an int32/int64 input as a shape tensor
    (values set through the optimization profile), so Cast(int input) -> scales builds;
    a float input cannot be a shape tensor and the parser refuses it.
    """
    return any(
        producer is None and not _is_constant(t) and not _is_integer(t)
        for t, producer in _ancestors(tensor)
    )


def _is_integer(tensor: gs.Tensor) -> bool:
    dtype = getattr(tensor, "dtype", None)
    try:
        return dtype is not None and np.issubdtype(np.dtype(dtype), np.integer)
    except TypeError:
        return False


def _resize_scales(node: gs.Node, opset: int) -> gs.Tensor | None:
    """The tensor holding the scales a Resize/Upsample uses, or None (sizes given, or attribute).

    Resize-10 and Upsample-9 take (X, scales); Resize-11+ takes (X, roi, scales, sizes) and
    ignores scales when sizes are given.
    """
    if node.op == "Upsample" or (opset < 11 and len(node.inputs) == 2):
        return _input(node, 1)
    if _input(node, 3) is not None:
        return None
    return _input(node, 2)


def _resize_mode(node: gs.Node) -> str:
    return _attr_str(node, "mode", "nearest")


def _coordinate_mode(node: gs.Node, opset: int) -> str:
    if opset < 11:  # Resize-10 has no such attribute and behaves as asymmetric
        return "asymmetric"
    return _attr_str(node, "coordinate_transformation_mode", "half_pixel")


# --- rules --------------------------------------------------------------------------
# Ops with their own rule below are left out of "unsupported-op" so each node is reported once.
_OPS_WITH_OWN_RULE = frozenset({"GatherElements"})


def unsupported_op(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if node.domain not in _DEFAULT_DOMAINS or node.op in _OPS_WITH_OWN_RULE:
        return None
    if node.op in target.unsupported_ops:
        return Hit(f"{target.name} has no importer for ONNX op {node.op}", None)
    return None


# Op names the parser imports that are not (or no longer) default-domain ONNX ops: experimental
# ops of old opsets and the parser's own TRT_* ops (checked with TensorRT-RTX's
# OnnxParser.supports_operator; tests/compat/test_rtx_oracle.py).
_PARSER_EXTRA_OPS = frozenset(
    {
        "ImageScaler",
        "ScaledTanh",
        "ParametricSoftplus",
        "TRT_Scale",
        "TRT_Shuffle",
        "TRT_TopK_Min",
        "TRT_MatMul",
        "TRT_RaggedSoftmax",
        "TRT_MaxAverageBlendPool",
    }
)


def plugin_required(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """An op the parser has no importer for by name, outside what unsupported-op reports.

    The parser ignores a node's domain: com.microsoft::Relu is imported as Relu, and a name it has
    no importer for goes to its plugin fallback, which fails unless a plugin of that name is
    registered (custom ops, ONNX Runtime's contrib ops such as FusedConv or FastGelu).
    """
    default = node.domain in _DEFAULT_DOMAINS
    onnx_op = node.op in onnx_op_first_opsets()
    if (default and onnx_op) or node.op in _PARSER_EXTRA_OPS:
        return None  # default-domain ONNX ops are unsupported-op's
    if not default and onnx_op and node.op not in target.unsupported_ops:
        return None  # imported as the ONNX op of that name
    where = node.op if default else f"{node.domain}::{node.op}"
    return Hit(
        f"{target.name} has no importer for {where}; its parser looks for a TensorRT plugin named "
        f"{node.op!r} and fails unless one is registered",
        None,
    )


def gather_elements_unsupported(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if target.gather_elements:
        return None
    return Hit(
        f"{target.name} does not import GatherElements; it can be rewritten as Gather on flattened data",
        "decompose-gather-elements",
    )


def scatter_reduction_attr(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if "reduction" not in node.attrs or node.op in target.unsupported_ops:
        return None  # an op the parser lacks altogether is reported once, by unsupported-op
    reduction = _attr_str(node, "reduction", "none")
    if node.op == "ScatterND":
        refuses_none, accepted = (
            target.scatter_nd_reduction_attr_refused,
            target.scatter_nd_reductions,
        )
    else:
        refuses_none, accepted = False, target.scatter_elements_reductions
    if reduction == "none":
        if refuses_none:
            return Hit(
                f'{target.name} refuses {node.op} with a reduction attribute, even reduction="none" '
                "(which means no reduction and can be dropped)",
                "strip-scatter-reduction",
            )
        return None
    if reduction not in accepted:
        return Hit(f'{target.name} does not import {node.op} with reduction="{reduction}"', None)
    return None


def resize_cubic(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if _resize_mode(node) != "cubic" or target.resize_cubic:
        return None
    return Hit(f"{target.name} does not support cubic Resize (TensorRT has it from 8.5)", None)


def resize_scales_coordinate_mode(node: gs.Node, target: Target, opset: int) -> Hit | None:
    mode = _resize_mode(node)
    if mode not in ("linear", "cubic") or (mode == "cubic" and not target.resize_cubic):
        return None
    if _resize_scales(node, opset) is None:
        return None
    coord = _coordinate_mode(node, opset)
    if coord in (
        "tf_crop_and_resize",
        "half_pixel_symmetric",
    ) or not target.accepts_coordinate_mode(coord):
        return None  # refused with sizes too: other rules report it
    if target.accepts_scale_mode(coord):
        return None
    accepted = ", ".join(sorted(target.resize_linear_scale_modes or ()))
    return Hit(
        f"{target.name} refuses {mode} Resize with scales in {coord} mode (accepts {accepted}); "
        "with sizes it is accepted",
        "fix-resize",
    )


def resize_coordinate_mode(node: gs.Node, target: Target, opset: int) -> Hit | None:
    coord = _coordinate_mode(node, opset)
    if coord in ("tf_crop_and_resize", "half_pixel_symmetric") or target.accepts_coordinate_mode(
        coord
    ):
        return None
    accepted = ", ".join(sorted(target.resize_coordinate_modes or ()))
    return Hit(
        f"{target.name} accepts Resize only with coordinate_transformation_mode in ({accepted}), "
        f"not {coord}, whether scales or sizes are given",
        None,
    )


def resize_antialias(node: gs.Node, target: Target, opset: int) -> Hit | None:
    # The spec ignores antialias for nearest, but the parsers refuse it whatever the mode.
    if not int(node.attrs.get("antialias", 0)) or target.resize_antialias:
        return None
    return Hit(f"{target.name} does not support antialiased Resize (antialias=1)", None)


def resize_tf_crop_and_resize(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if _coordinate_mode(node, opset) != "tf_crop_and_resize" or target.resize_tf_crop_and_resize:
        return None
    return Hit(
        f"{target.name} does not support coordinate_transformation_mode=tf_crop_and_resize", None
    )


def resize_half_pixel_symmetric(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if (
        _coordinate_mode(node, opset) != "half_pixel_symmetric"
        or target.resize_half_pixel_symmetric
    ):
        return None
    return Hit(
        f"{target.name} does not support coordinate_transformation_mode=half_pixel_symmetric", None
    )


def resize_keep_aspect_ratio_policy(node: gs.Node, target: Target, opset: int) -> Hit | None:
    policy = _attr_str(node, "keep_aspect_ratio_policy", "stretch")
    if policy == "stretch" or target.resize_keep_aspect_ratio_policy:
        return None
    return Hit(
        f'{target.name} supports only keep_aspect_ratio_policy="stretch", not "{policy}"', None
    )


def resize_tf_half_pixel_for_nn(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if (
        _coordinate_mode(node, opset) != "tf_half_pixel_for_nn"
        or not target.resize_tf_half_pixel_for_nn_strict
    ):
        return None
    nearest_mode = _attr_str(node, "nearest_mode", "round_prefer_floor")
    if nearest_mode != "round_prefer_floor":  # checked whatever the mode, linear and cubic too
        return Hit(
            f"{target.name} accepts tf_half_pixel_for_nn Resize only with nearest_mode=round_prefer_floor, "
            f"not {nearest_mode}",
            None,
        )
    if _resize_scales(node, opset) is None:
        return Hit(
            f"{target.name} accepts tf_half_pixel_for_nn Resize only with scales, not sizes", None
        )
    return None


def resize_scaled_axes(node: gs.Node, target: Target, opset: int) -> Hit | None:
    mode = _resize_mode(node)
    limit = {
        "linear": target.resize_linear_max_scaled_axes,
        "cubic": target.resize_cubic_max_scaled_axes,
    }.get(mode)
    if limit is None or "axes" in node.attrs:
        return None
    scales = _resize_scales(node, opset)
    values = constant_values(scales) if scales is not None else None
    if values is None or values.ndim != 1 or values.size <= limit:
        return None
    if all(float(v) == 1.0 for v in values[: values.size - limit]):
        return None
    return Hit(
        f"{target.name} resizes {mode} only on the innermost {limit} axes when scales are given "
        f"(scales {values.tolist()}); with sizes it is accepted",
        None,
    )


def resize_scales_not_constant(node: gs.Node, target: Target, opset: int) -> Hit | None:
    scales = _resize_scales(node, opset)
    if scales is None or _is_constant(scales):
        return None
    if not target.resize_scales_must_be_constant:
        if not _reads_graph_input_values(scales):
            return None
        return Hit(
            f"{target.name} refuses float scales computed from a graph input's values ({scales.name!r}); "
            "export with sizes or fixed scale factors",
            None,
        )
    if _is_foldable(scales):
        return Hit(
            f"{target.name} needs {node.op} scales to be a constant; {scales.name!r} is computed from constants",
            "fold-constants",
        )
    return Hit(
        f"{target.name} needs {node.op} scales to be a constant; {scales.name!r} depends on run-time data "
        "(a graph input or a dynamic shape); export with sizes or fixed scale factors",
        None,
    )


_TYPE_NAMES = {v: k for k, v in onnx.TensorProto.DataType.items()}


@functools.cache
def _onnx_type_of_dtype(dtype: Any) -> int | None:  # whatever a graph-surgeon tensor's dtype holds
    if isinstance(dtype, int):
        return dtype
    try:
        return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    except (KeyError, TypeError, ValueError):
        return None


def _onnx_type(tensor: gs.Tensor) -> int | None:
    """The tensor's ONNX element type (TensorProto enum); None when unknown.

    onnx-graphsurgeon gives a numpy/ml_dtypes dtype, or the enum where numpy has no type (FP8
    E5M2); a Cast output without a recorded type has the type of the Cast's `to`.
    """
    dtype = getattr(tensor, "dtype", None)
    if dtype is None:
        producer = tensor.inputs[0] if tensor.inputs else None
        if producer is not None and producer.op == "Cast" and "to" in producer.attrs:
            return int(producer.attrs["to"])
        return None
    if isinstance(dtype, onnx.TypeProto):  # optional/sequence values: io-type-unsupported's
        return None
    return _onnx_type_of_dtype(dtype)


def _element_type(tensor: gs.Tensor) -> np.dtype | None:
    """The tensor's numpy element type; None when unknown or not a numpy type."""
    code = _onnx_type(tensor)
    if code is None:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code))
    except (KeyError, TypeError, ValueError):
        return None


def type_name(code: int) -> str:
    return _TYPE_NAMES.get(code, str(code)).lower()


def tensor_type_unsupported(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """A tensor whose ONNX type the target has no TensorRT DataType for (int16, FP8 E5M2, string...).

    onnx-tensorrt `convertDtype`: "Failed to convert ONNX date type to TensorRT data type." for a
    graph input or initializer, "Unsupported data type for the Cast operator!" for Cast's `to`.
    """
    if not target.tensor_types:
        return None
    for tensor in (*node.inputs, *node.outputs):
        code = _onnx_type(tensor)
        if code is None or code == 0 or code in target.tensor_types:
            continue
        return Hit(
            f"{target.name} has no {type_name(code)} tensors ({tensor.name!r}); "
            "use a type TensorRT has (float32/16, int32/64, int8, bool) in the model, e.g. at export",
            None,
        )
    return None


_QDQ = ("QuantizeLinear", "DequantizeLinear")


def quantized_type_outside_qdq(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """FP8/INT4/FP4 tensors anywhere but the quantized side of Q/DQ, and odd-sized 4-bit DQ.

    TensorRT treats FP8, INT4 and FP4 as quantized types: only QuantizeLinear may produce them and
    DequantizeLinear read them (docs/operators.md, 10.0: "support is available only through
    quantization"); the TensorRT-RTX 1.7 builder: "Tensor input has datatype FP8 but is not
    consumed by IPluginLayer ...". Its parser also wants an even element count for 4-bit data.
    """
    if not target.quantized_types:
        return None
    if node.op in _QDQ:
        zero = _input(node, 2)
        if zero is not None and _onnx_type(zero) in (22, 23) and not _is_constant(zero):
            return Hit(
                f"{target.name} needs the zero point of 4-bit Q/DQ to be an initializer "
                f"({zero.name!r} is not)",
                None,
            )
        data = node.inputs[0] if node.op == "DequantizeLinear" and node.inputs else None
        code = _onnx_type(data) if data is not None else None
        if data is not None and code in (22, 23, 21):  # INT4, FLOAT4E2M1, UINT4
            dims = _static_dims(data)
            if dims and all(isinstance(d, int) for d in dims) and int(np.prod(dims)) % 2:
                return Hit(
                    f"{target.name} dequantizes 4-bit data only with an even number of elements "
                    f"({data.name!r} has shape {list(dims)})",
                    None,
                )
        return None
    for tensor in (*node.inputs, *node.outputs):
        code = _onnx_type(tensor)
        if code in target.quantized_types:
            return Hit(
                f"{target.name} has {type_name(code)} tensors only as quantized data between "
                f"QuantizeLinear and DequantizeLinear; {node.op} cannot read or write {tensor.name!r}",
                None,
            )
    return None


def uint8_tensor(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """uint8 anywhere but a graph input read by Cast/Identity, a graph output or symmetric Q/DQ."""
    if not target.uint8_io_only:
        return None
    qdq = node.op in ("QuantizeLinear", "DequantizeLinear")
    if qdq and len(node.inputs) > 2:
        zero_point = node.inputs[2]
        values = constant_values(zero_point)
        dtype = values.dtype if values is not None else _element_type(zero_point)
        if dtype == np.uint8 and (values is None or values.any()):
            return Hit(
                f"{target.name} has no asymmetric uint8 Q/DQ (zero point {zero_point.name!r} is not 0); "
                "quantize to int8 with zero point 0, e.g. with the insert-qdq pass",
                None,
            )
    for tensor in node.inputs:
        if qdq or isinstance(tensor, gs.Constant) or _onnx_type(tensor) != 2:
            continue
        if tensor.inputs:
            return Hit(
                f"{target.name} has uint8 tensors only at the network's inputs and outputs, not in between "
                f"({tensor.name!r}); compute in float or int32 and Cast at the output",
                None,
            )
        if node.op not in target.uint8_input_readers:
            return Hit(
                f"{target.name} takes a uint8 graph input ({tensor.name!r}) only through Cast; "
                f"{node.op} cannot read it: Cast it to float first",
                None,
            )
    return None


def maxpool_indices(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if target.maxpool_indices or len(node.outputs) < 2:
        return None
    return Hit(
        f"{target.name} refuses MaxPool with an Indices output (even unused); "
        "export without return_indices",
        None,
    )


def _static_dims(tensor: gs.Tensor | None) -> tuple | None:
    shape = getattr(tensor, "shape", None)
    if shape is None and tensor is not None:
        values = constant_values(tensor)  # a Constant node's output has no recorded shape
        shape = None if values is None else values.shape
    return None if shape is None else tuple(shape)


def scatter_elements_indices_shape(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if not target.scatter_elements_indices_within_data or len(node.inputs) < 3:
        return None
    reduction = _attr_str(node, "reduction", "none")
    if reduction != "none" and reduction not in target.scatter_elements_reductions:
        return None  # scatter-reduction-attr reports the node
    data = _static_dims(node.inputs[0])
    if data is None:
        return None
    for role, tensor in (("indices", node.inputs[1]), ("updates", node.inputs[2])):
        dims = _static_dims(tensor)
        if dims is None or len(dims) != len(data):
            continue
        for axis, (d, n) in enumerate(zip(dims, data, strict=False)):
            if isinstance(d, int) and isinstance(n, int) and d >= 0 and n >= 0 and d > n:
                return Hit(
                    f"{target.name} refuses ScatterElements whose {role} dimension {axis} ({d}) exceeds "
                    f"data's ({n}), the scatter axis included",
                    None,
                )
    return None


# --- inputs that must be build-time constants ---------------------------------------
# (op, input index, name): the parser reads these values while building the network.
# docs/operators.md (release/8.x and 10.x): Reduce* "`axes` must be an initializer", Squeeze
# "`axes` must be an initializer", Unsqueeze "`axes` must be a constant tensor", Dropout
# "`is_training` must be an initializer and evaluate to False"; TensorRT-RTX 1.7: "Axis input must
# resolve to a build-time constant (an initializer or a constant-foldable subgraph)".
_REDUCE_OPS = (
    "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd "
    "ReduceSum ReduceSumSquare"
).split()
CONSTANT_INPUTS: dict[str, tuple[int, str]] = {
    **dict.fromkeys(_REDUCE_OPS, (1, "axes")),
    "Squeeze": (1, "axes"),
    "Unsqueeze": (1, "axes"),
    "Dropout": (2, "training_mode"),
    "OneHot": (1, "depth"),  # 10.0 operators.md: "`depth` must be a build-time constant"
    "STFT": (1, "frame_step"),  # TensorRT-RTX 1.7: "frame_step must be an initializer!"
}
# Of those, inputs an integer graph input may feed (TensorRT takes it as a shape tensor whose
# values the optimization profile fixes): OneHot depth (TensorRT-RTX 1.7 builds int64 depth
# inputs, refuses float ones). Axes never: "Axis input must resolve to a build-time constant".
_SHAPE_TENSOR_OK = frozenset({"OneHot"})


def _reads_any_graph_input_values(tensor: gs.Tensor) -> bool:
    """True when `tensor`'s values come from a graph input (its shape alone does not count)."""
    return any(
        producer is None and not _is_constant(t) and not isinstance(t, gs.Constant)
        for t, producer in _ancestors(tensor)
    )


def _constant_subgraph(tensor: gs.Tensor) -> bool:
    """True when `tensor` is computed from constants only (no graph input, no Shape/Size)."""
    for t, producer in _ancestors(tensor):
        if _is_constant(t):
            continue
        if producer is None or producer.op in ("Shape", "Size", "Loop", "If", "Scan"):
            return False
        if producer.op in RANDOM_OPS or producer.domain not in _DEFAULT_DOMAINS:
            return False
    return True


def range_inputs(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """Range: float start/limit/delta must be constants (docs/operators.md 8.x: "Floating point
    inputs are only supported if `start`, `limit`, and `delta` inputs are initializers"; TensorRT-RTX
    fails inside its shape analyser), and TensorRT-RTX takes int32, int64 and float only."""
    code = _onnx_type(node.inputs[0]) if node.inputs else None
    if target.rtx_node_limits and code is not None and code not in (1, 6, 7):
        return Hit(
            f"{target.name} computes Range on int32, int64 and float only, not {type_name(code)}",
            None,
        )
    if code not in (1, 10, 16, 11):
        return None
    for tensor in node.inputs[:3]:
        if tensor is not None and not _constant_subgraph(tensor):
            fix = "fold-constants" if _is_foldable(tensor) else None
            return Hit(
                f"{target.name} needs float Range inputs to be constants; {tensor.name!r} is not",
                fix,
            )
    return None


def tensor_scatter_limits(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """TensorScatter (opset 24) on TensorRT-RTX 1.7: linear mode only, a 4-D past_cache."""
    if not target.rtx_node_limits:
        return None
    mode = _attr_str(node, "mode", "linear")
    if mode != "linear":
        return Hit(f"{target.name} supports TensorScatter only in linear mode, not {mode}", None)
    dims = _static_dims(node.inputs[0]) if node.inputs else None
    if dims is not None and len(dims) != 4:
        return Hit(
            f"{target.name} needs TensorScatter's past_cache to be 4-D, not {len(dims)}-D", None
        )
    return None


def pre_opset7_broadcast(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """Below opset 7, any op that broadcasts two or more inputs: every parser refuses it, equal
    ranks included ("Pre-opset 7 broadcasting is unsupported in this version of the ONNX parser":
    onnx-tensorrt's broadcastTensor asserts the opset before looking at the ranks, 7.x to 10.x)."""
    if opset >= 7 or len([t for t in node.inputs if t is not None and t.name]) < 2:
        return None
    return Hit(
        f"{target.name} does not import {node.op} below opset 7 (this model: opset {opset}; the "
        "old broadcasting rules); re-export with opset 7 or newer",
        None,
    )


def constant_input(node: gs.Node, target: Target, opset: int) -> Hit | None:
    index, name = CONSTANT_INPUTS[node.op]
    tensor = _input(node, index)
    if tensor is None:
        return None
    if _is_constant(tensor):
        values = constant_values(tensor) if node.op == "Dropout" else None
        if values is not None and values.size and bool(values.reshape(-1)[0]):
            return Hit(
                f"{target.name} does not run Dropout in training mode (training_mode is true); "
                "export in eval mode",
                None,
            )
        return None
    if target.constant_inputs == "foldable":
        if node.op in _SHAPE_TENSOR_OK:
            if not _reads_graph_input_values(tensor):
                return None
            return Hit(
                f"{target.name} needs {node.op} {name} ({tensor.name!r}) at build time; it is read "
                "from a float graph input: make it a constant or an int64 input",
                None,
            )
        if _constant_subgraph(tensor):
            return None  # the parser folds constants (not shapes: RMSNormalization's expanded
            # Range(axis, Size(Shape(X)), 1) axes are refused)
        if _is_foldable(tensor):
            return Hit(
                f"{target.name} needs {node.op} {name} at build time; {tensor.name!r} is computed "
                "from the input's shape, which its parser does not fold",
                "fold-constants",
            )
        return Hit(
            f"{target.name} needs {node.op} {name} ({tensor.name!r}) at build time; it depends on "
            "run-time data (a graph input or a dynamic shape): make it a constant at export",
            None,
        )
    if _is_foldable(tensor):
        return Hit(
            f"{target.name} needs {node.op} {name} to be an initializer; {tensor.name!r} is computed "
            "from constants",
            "fold-constants",
        )
    return Hit(
        f"{target.name} needs {node.op} {name} to be an initializer; {tensor.name!r} depends on "
        "run-time data: make it a constant at export",
        None,
    )


def input_form_too_new(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """An input that replaced an attribute at an opset newer than the target's parser reads.

    Unsqueeze-13 takes `axes` as input 1; TensorRT 7.1's importer (opsets <= 11) looks for the
    attribute ("Attribute not found: axes") or, for Reduce*/Split, ignores the input and computes
    something else. Judged by the opset the model declares.
    """
    since, index, name = INPUT_FORM_SINCE[node.op]
    if since <= target.max_opset or opset < since or _input(node, index) is None:
        return None
    return Hit(
        f"{target.name}'s parser reads ONNX opsets up to {target.max_opset}, where {node.op} takes "
        f"`{name}` as an attribute; this opset-{opset} model gives it as input {index}, which that "
        f"parser does not read: export with opset {target.max_opset} or choose a newer target",
        None,
    )


def pool_dilations(node: gs.Node, target: Target, opset: int) -> Hit | None:
    dilations = node.attrs.get("dilations")
    if not target.pool_dilations_refused or not dilations or all(int(d) == 1 for d in dilations):
        return None
    return Hit(
        f"{target.name} does not pool with dilations other than 1 (dilations {list(dilations)})",
        None,
    )


def lp_order(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """LpPool/LpNormalization with p other than 1 or 2 (onnx-tensorrt from 7.2: "Only L1 and L2
    normalization are supported.")."""
    p = int(node.attrs.get("p", 2))
    if p in (1, 2) or node.op in target.unsupported_ops:
        return None
    return Hit(f"{target.name} supports {node.op} only with p = 1 or 2, not {p}", None)


def _used_outputs(node: gs.Node) -> list[gs.Tensor]:
    return [t for t in node.outputs if t is not None and t.name]


def layernorm_outputs(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if not target.layernorm_one_output or len(_used_outputs(node)) < 2:
        return None
    return Hit(
        f"{target.name} imports LayerNormalization only with its first output (Y); drop the "
        "Mean/InvStdDev outputs",
        None,
    )


def clip_int8(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """int8 Clip whose `min` is not a constant (written as an empty name, or a graph input):
    TensorRT-RTX 1.7 refuses it; Clip(x) and Clip(x, constant min) build."""
    if not target.int8_clip_mod_refused or len(node.inputs) < 2:
        return None
    low = node.inputs[1]
    if (low.name and _is_constant(low)) or _onnx_type(node.inputs[0]) != 3:
        return None
    return Hit(
        f"{target.name} refuses int8 Clip unless `min` is a constant (here "
        f"{repr(low.name) if low.name else 'an empty name'})",
        None,
    )


def mod_integer_type(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """Mod on int8 (TensorRT-RTX 1.7: fmod=0 "Inputs cannot be of floating point types. The
    current input type is INT8."; fmod=1 fails in the builder)."""
    if not target.int8_clip_mod_refused or not node.inputs or _onnx_type(node.inputs[0]) != 3:
        return None
    return Hit(f"{target.name} computes Mod on float, int32 and int64 tensors, not int8", None)


def batchnorm_training(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if not int(node.attrs.get("training_mode", 0)) and len(_used_outputs(node)) < 2:
        return None
    return Hit(
        f"{target.name} does not support BatchNormalization in training mode (training_mode=1 or "
        "running mean/var outputs); export in eval mode",
        None,
    )


def attention_limits(node: gs.Node, target: Target, opset: int) -> Hit | None:
    """TensorRT-RTX 1.7 on Attention (opset 23), from its parser's errors and builder's failures.

    Parser: one output only, no softcap, K and V of one head size, no attn_mask with is_causal.
    Builder (a machine without GPU, as here): only 3-D Q/K/V with equal head counts and neither a
    mask nor is_causal find a kernel ("Attention operation was not supported by a dedicated kernel").
    """
    if not target.rtx_node_limits:
        return None
    name = target.name
    if len(_used_outputs(node)) > 1:
        return Hit(
            f"{name} imports Attention only with one output (no present_key/value, qk)", None
        )
    if float(node.attrs.get("softcap", 0.0)) != 0.0:
        return Hit(f"{name} does not support Attention with softcap", None)
    q, k, v = (_input(node, i) for i in range(3))
    k_dims, v_dims = _static_dims(k), _static_dims(v)
    if k_dims and v_dims and k_dims[-1] != v_dims[-1] and isinstance(k_dims[-1], int):
        return Hit(f"{name} needs Attention's K and V to have one head size", None)
    mask = _input(node, 3)
    causal = bool(int(node.attrs.get("is_causal", 0)))
    if mask is not None and causal:
        return Hit(f"{name} does not take an attn_mask together with is_causal=1", None)
    q_dims = _static_dims(q)
    heads_differ = int(node.attrs.get("q_num_heads", 0)) != int(node.attrs.get("kv_num_heads", 0))
    if q_dims is not None and len(q_dims) == 4:
        heads_differ = k_dims is not None and len(k_dims) == 4 and q_dims[1] != k_dims[1]
    extra = any(_input(node, i) is not None for i in range(3, len(node.inputs)))
    if (q_dims is not None and len(q_dims) == 4) or extra or causal or heads_differ:
        return Hit(
            f"{name} builds Attention only for 3-D Q/K/V with equal head counts, no mask, no "
            "is_causal (the builder finds no kernel otherwise); export attention as MatMul/Softmax",
            None,
        )
    return None


def nms_builder(node: gs.Node, target: Target, opset: int) -> Hit | None:
    if not target.nms_builder_refused:
        return None
    return Hit(
        f"{target.name} parses NonMaxSuppression but cannot build it; run NMS outside the engine",
        None,
    )


_RESIZE = ("Resize",)
# Ops that broadcast their inputs (opset < 7 spelled it with a `broadcast` attribute).
_BROADCAST_OPS = tuple(
    "Add Sub Mul Div Pow PRelu Max Min Sum Mean And Or Xor Equal Greater Less Where Gemm".split()
)

RULES: tuple[Rule, ...] = (
    Rule("unsupported-op", (), unsupported_op),
    Rule("plugin-required", (), plugin_required),
    Rule("tensor-type-unsupported", (), tensor_type_unsupported),
    Rule("quantized-type-outside-qdq", (), quantized_type_outside_qdq),
    Rule("uint8-tensor", (), uint8_tensor),
    Rule("input-not-constant", tuple(CONSTANT_INPUTS), constant_input),
    Rule("pool-dilations", ("MaxPool", "AveragePool", "LpPool"), pool_dilations),
    Rule("lp-order", ("LpPool", "LpNormalization"), lp_order),
    Rule("layernorm-outputs", ("LayerNormalization",), layernorm_outputs),
    Rule("clip-int8", ("Clip",), clip_int8),
    Rule("mod-integer-type", ("Mod",), mod_integer_type),
    Rule("batchnorm-training", ("BatchNormalization",), batchnorm_training),
    Rule("attention-limits", ("Attention",), attention_limits),
    Rule("range-inputs", ("Range",), range_inputs),
    Rule("tensor-scatter-limits", ("TensorScatter",), tensor_scatter_limits),
    Rule("pre-opset7-broadcast", _BROADCAST_OPS, pre_opset7_broadcast),
    Rule("nms-builder", ("NonMaxSuppression",), nms_builder),
    Rule("gather-elements-unsupported", ("GatherElements",), gather_elements_unsupported),
    Rule("scatter-reduction-attr", ("ScatterND", "ScatterElements"), scatter_reduction_attr),
    Rule("scatter-elements-indices-shape", ("ScatterElements",), scatter_elements_indices_shape),
    Rule("maxpool-indices", ("MaxPool",), maxpool_indices),
    Rule("resize-cubic-unsupported", _RESIZE, resize_cubic),
    Rule("resize-coordinate-mode", _RESIZE, resize_coordinate_mode),
    Rule("resize-scales-coordinate-mode", _RESIZE, resize_scales_coordinate_mode),
    Rule("resize-antialias", _RESIZE, resize_antialias),
    Rule("resize-tf-crop-and-resize", _RESIZE, resize_tf_crop_and_resize),
    Rule("resize-half-pixel-symmetric", _RESIZE, resize_half_pixel_symmetric),
    Rule("resize-keep-aspect-ratio-policy", _RESIZE, resize_keep_aspect_ratio_policy),
    Rule("resize-scales-not-constant", ("Resize", "Upsample"), resize_scales_not_constant),
    Rule("resize-tf-half-pixel-for-nn", _RESIZE, resize_tf_half_pixel_for_nn),
    Rule("resize-scaled-axes", _RESIZE, resize_scaled_axes),
)

RULE_NAMES: tuple[str, ...] = tuple(r.name for r in RULES)

# Checks reported as notes, not findings (lint_notes): input-form-too-new is what TensorRT 7.1's
# parser does (it aborts on Unsqueeze-13), but the package's own opset-13 sample and every
# opset >= 13 export would then have no automatic fix for the 7.x targets until a pass lowers
# the opset; kept out of the exit code until then.
NOTE_RULES: tuple[Rule, ...] = (
    Rule("input-form-too-new", tuple(INPUT_FORM_SINCE), input_form_too_new),
)
