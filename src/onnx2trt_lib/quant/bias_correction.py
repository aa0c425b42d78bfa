"""Bias correction: take out the mean output shift that INT8 weight rounding adds to each layer.

Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction"
(arXiv:1906.04721), section 4.2. Per-channel INT8 weights W_q = W + dW shift each output
channel of a Conv/Gemm/MatMul by E[dW x], which is not zero in general (the rounding errors of
a channel's weights do not cancel when its inputs have a non-zero mean, e.g. after a Relu).
This is the empirical variant: E[dW x] is measured over the calibration data with the FP32
inputs x, in one ONNX Runtime run that computes every layer's dW x beside the model, and
subtracted from the layer's bias. dW uses exactly the weight scales insert-qdq writes
(max |w| / 127 per output channel, round half to even).

The FP32 model changes on purpose (its biases now anticipate the weight rounding); ranges
calibrated afterwards describe the corrected model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..passes._infra import (
    PassResult,
    SkippedNode,
    _carry_model_metadata,
    export_graph,
    result,
)
from ..passes.insert_qdq import INT8_MAX, constant_values, weight_axis, weight_scale
from ._stats import channel_means

OP_TYPES = ("Conv", "Gemm", "MatMul")


def fake_quant_weight(values: np.ndarray, axis: int | None) -> np.ndarray:
    """The weights as insert-qdq's Q/DQ pair gives them back (float64)."""
    scale = weight_scale(values, axis).astype(np.float64)
    if axis is not None:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return np.clip(np.rint(values.astype(np.float64) / scale), -INT8_MAX, INT8_MAX) * scale


class CorrectBias:
    """Subtract each quantized layer's mean weight-rounding shift (measured on data) from its bias."""

    name = "bias-correction"

    def targets(
        self, graph: gs.Graph
    ) -> tuple[list[tuple[gs.Node, np.ndarray]], list[SkippedNode]]:
        """(node, dW) for Conv/Gemm/MatMul with a constant weight quantized per output channel."""
        found, skipped = [], []
        for node in graph.nodes:
            if node.op not in OP_TYPES or len(node.inputs) < 2:
                continue
            w = constant_values(node.inputs[1])
            if w is None or constant_values(node.inputs[0]) is not None:
                continue
            if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
                skipped.append(SkippedNode(node.name, node.op, "Gemm with transA"))
                continue
            axis = weight_axis(node, 1, tuple(w.shape))
            if axis is None or w.dtype != np.float32:
                skipped.append(SkippedNode(node.name, node.op, "weight not quantized per channel"))
                continue
            dw = (fake_quant_weight(w, axis) - w.astype(np.float64)).astype(np.float32)
            found.append((node, dw))
        return found, skipped

    def run(
        self, model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[onnx.ModelProto, PassResult]:
        graph = gs.import_onnx(model)
        found, skipped = self.targets(graph)
        if not found:
            return model, result(self.name, {"corrected": 0}, skipped)
        shifts = mean_shifts(model, found, feeds)
        corrected = 0
        for (node, _dw), shift in zip(found, shifts, strict=True):
            if shift is None or not np.any(shift):
                continue
            if _subtract_from_bias(graph, node, shift):
                corrected += 1
            else:
                skipped.append(SkippedNode(node.name, node.op, "bias not a constant of [C]"))
        graph.cleanup().toposort()
        out = export_graph(graph)
        _carry_model_metadata(model, out)
        return out, result(self.name, {"corrected": corrected}, skipped)


def mean_shifts(
    model: onnx.ModelProto,
    found: Sequence[tuple[gs.Node, np.ndarray]],
    feeds: Sequence[Mapping[str, np.ndarray]],
) -> list[np.ndarray | None]:
    """Per layer: E[dW x] per output channel over the feeds, from one run of the model with a
    dW twin of each layer (same op and attributes, weight dW, no bias) beside it."""
    side = gs.import_onnx(model)
    tensors = side.tensors()
    names, axes = [], {}
    for i, (node, dw) in enumerate(found):
        out = gs.Variable(f"__bias_correction_shift_{i}", dtype=np.float32)
        weight = gs.Constant(f"__bias_correction_dw_{i}", dw)
        x = tensors[node.inputs[0].name]
        side.nodes.append(
            gs.Node(node.op, inputs=[x, weight], outputs=[out], attrs=dict(node.attrs))
        )
        side.outputs.append(out)
        names.append(out.name)
        axes[out.name] = 1 if node.op == "Conv" else -1
    means = channel_means(export_graph(side), feeds, axes)
    return [means.get(n) for n in names]


def _subtract_from_bias(graph: gs.Graph, node: gs.Node, shift: np.ndarray) -> bool:
    """b - shift into the layer's bias: Conv's B, Gemm's C, or the constant Add after a MatMul
    (one is added, zero-initialised, when the layer has none)."""
    channels = len(shift)
    if node.op in ("Conv", "Gemm"):
        slot = 2
        if len(node.inputs) > slot and node.inputs[slot].name:
            bias = constant_values(node.inputs[slot])
            if (
                bias is None
                or bias.size not in (1, channels)
                or len(node.inputs[slot].outputs) != 1
            ):
                return False
            new = np.broadcast_to(bias.reshape(-1).astype(np.float64), (channels,)) - shift
            _replace_constant(node, slot, new.astype(np.float32))
            return True
        bias = gs.Constant(
            f"{node.name or node.outputs[0].name}_corrected_bias", (-shift).astype(np.float32)
        )
        while len(node.inputs) < slot:
            node.inputs.append(gs.Variable.empty())
        node.inputs.append(bias)
        return True
    y = node.outputs[0]
    add = y.outputs[0] if len(y.outputs) == 1 and y.outputs[0].op == "Add" else None
    if add is not None:
        other = 1 if add.inputs[0] is y else 0
        bias = constant_values(add.inputs[other])
        if (
            bias is not None
            and bias.size == channels
            and bias.reshape(-1).shape == (channels,)
            and len(add.inputs[other].outputs) == 1
        ):
            new = bias.astype(np.float64) - shift.reshape(bias.shape)
            _replace_constant(add, other, new.astype(np.float32))
            return True
    # a MatMul without a bias Add: add one after it
    out = gs.Variable(f"{y.name}_uncorrected", dtype=y.dtype, shape=y.shape)
    node.outputs[0] = out
    graph.nodes.append(
        gs.Node(
            "Add",
            name=f"{node.name or y.name}_bias_correction",
            inputs=[out, gs.Constant(f"{y.name}_bias_correction", (-shift).astype(np.float32))],
            outputs=[y],
        )
    )
    return True


def _replace_constant(node: gs.Node, slot: int, values: np.ndarray) -> None:
    """The node's (single-consumer) constant input at `slot` becomes an initializer of the same
    name holding `values`; a Constant node that produced it is detached (one tensor per name)."""
    old = node.inputs[slot]
    if old.inputs:
        producer = old.inputs[0]
        old.inputs.clear()
        producer.outputs.clear()
    node.inputs[slot] = gs.Constant(old.name, values)
