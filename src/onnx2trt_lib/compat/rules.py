"""The lint rules: one small function per thing a TensorRT ONNX parser refuses.

A rule looks at one node and the target's row of data (targets.py) and returns a message
when the parser would refuse the node, else None. The rule name is stable (scripts and
`--json` consumers key on it); the pass name says what `onnx2trt fix` runs to repair it
(None: no automatic fix).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..passes.fold_constants import RANDOM_OPS
from ..passes.insert_qdq import constant_values
from .targets import Target, onnx_op_first_opsets

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


# ONNX element types TensorRT has no DataType for, in any version (its types: float32/16,
# bfloat16, int8/32/64, uint8, bool, fp8, int4, fp4): the parser refuses such a tensor.
_NO_TENSORRT_TYPE = {
    np.dtype(np.int16),
    np.dtype(np.uint16),
    np.dtype(np.uint32),
    np.dtype(np.uint64),
}


def _element_type(tensor: gs.Tensor) -> np.dtype | None:
    """The tensor's numpy element type; None when unknown or not a numpy type (e.g. bfloat16).

    A Cast output without a recorded type (exporters write no value_info for intermediates)
    has the type of the Cast's `to` attribute.
    """
    dtype = getattr(tensor, "dtype", None)
    producer = tensor.inputs[0] if tensor.inputs else None
    if dtype is None and producer is not None and producer.op == "Cast" and "to" in producer.attrs:
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(int(producer.attrs["to"]))
        except (KeyError, TypeError, ValueError):
            return None
    try:
        return None if dtype is None else np.dtype(dtype)
    except TypeError:
        return None


def tensor_type_unsupported(node: gs.Node, target: Target, opset: int) -> Hit | None:
    for tensor in (*node.inputs, *node.outputs):
        dtype = _element_type(tensor)
        if dtype is None or dtype not in _NO_TENSORRT_TYPE:
            continue
        return Hit(
            f"{target.name} has no {dtype.name} tensors ({tensor.name!r}); "
            "make it int32/int64 (or float) in the model, e.g. at export",
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
        if qdq or isinstance(tensor, gs.Constant) or _element_type(tensor) != np.uint8:
            continue
        if tensor.inputs:
            return Hit(
                f"{target.name} has uint8 tensors only at the network's inputs and outputs, not in between "
                f"({tensor.name!r}); compute in float or int32 and Cast at the output",
                None,
            )
        if node.op not in ("Cast", "Identity"):
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


_RESIZE = ("Resize",)

RULES: tuple[Rule, ...] = (
    Rule("unsupported-op", (), unsupported_op),
    Rule("plugin-required", (), plugin_required),
    Rule("tensor-type-unsupported", (), tensor_type_unsupported),
    Rule("uint8-tensor", (), uint8_tensor),
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
