"""Bias correction of the Q/DQ model: take out each INT8 layer's mean output shift against FP32.

Nagel et al. 2019 ("Data-Free Quantization Through Weight Equalization and Bias Correction",
arXiv:1906.04721, section 4.2) correct the mean shift E[W_q x] - E[W x] that weight rounding
adds to every output channel. Here activation quantization is included: per output channel,
the mean over calibration rows of op(Q(x), Q(W)) - op(x, W), with Q exactly as insert-qdq
writes it, is subtracted from the layer's bias (`local_biases`: x is the layer's FP32 input,
one run of the FP32 model with two twins of every layer beside it).

`correct_biases` is the sequential variant (Jacobi passes): the layer's output in the full
Q/DQ model minus FP32, each pass with the previous corrections in place. On PP-OCRv4 rec it
diverges (the SVTR neck's Conv after the average pool carries a mean shift of ~20 that the
rest of the network tolerates; correcting it and its upstream both, pass after pass, took
exact match from 0.90 to 0.00), so quantize uses the local one.

The correction belongs to a layer only while it is INT8: a layer kept in float keeps its
original bias (`with_biases` writes the corrected ones for the INT8 layers only, and the
switch model of quant.switch picks corrected or original bias with the layer's switch).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ._stats import channel_means

BIAS_SAMPLES = 64  # rows the shifts are measured on (taken from the protection's search rows)
BIAS_PASSES = 2  # measurement passes over them (1 = one-pass, no upstream correction seen)


@dataclass(frozen=True)
class BiasFix:
    """A layer's bias: where it lives (node, input slot, initializer), original and corrected."""

    layer: str
    node: str  # the node reading the bias: the layer itself (Conv/Gemm) or the Add after a MatMul
    slot: int
    tensor: str  # the initializer
    output: str  # the layer's output tensor the shift is measured on
    axis: int  # its channel axis
    original: np.ndarray
    corrected: np.ndarray


def bias_slots(
    model: onnx.ModelProto, layers: Collection[str]
) -> tuple[onnx.ModelProto, dict[str, tuple[str, int, str, str, int]]]:
    """(model with a zero bias given to Conv/Gemm layers without one, layer -> (node, slot,
    initializer, output, channel axis)) for the layers whose bias is a single-consumer
    initializer; others are left out. The FP32 function is unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    _constants_to_initializers(graph)
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in n.input:
            consumers[t] = consumers.get(t, 0) + 1
            readers.setdefault(t, []).append(n)
    want = set(layers)
    slots = {}
    for node in graph.node:
        if node.name not in want or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if w.data_type != onnx.TensorProto.FLOAT:  # an FP16 model: a float32 slot breaks it
            continue
        if node.op_type == "Conv":
            channels, axis = w.dims[0], 1
        elif node.op_type == "Gemm":
            attrs = {a.name: a.i for a in node.attribute}
            if attrs.get("transA", 0):
                continue
            channels = w.dims[0] if attrs.get("transB", 0) else w.dims[-1]
            axis = -1
        elif node.op_type == "MatMul" and len(w.dims) == 2:
            channels, axis = w.dims[-1], -1
        else:
            continue
        y = node.output[0]
        if node.op_type in ("Conv", "Gemm"):
            if len(node.input) > 2 and node.input[2]:
                b = node.input[2]
                if b not in inits or consumers.get(b, 0) != 1:
                    continue
                if numpy_helper.to_array(inits[b]).size != channels:
                    continue
            else:
                b = f"{node.name}__bias"
                while len(node.input) < 2:
                    node.input.append("")
                node.input.append(b)
                graph.initializer.append(numpy_helper.from_array(np.zeros(channels, np.float32), b))
                inits[b] = graph.initializer[-1]
                consumers[b] = 1
            slots[node.name] = (node.name, 2, b, y, axis)
            continue
        adds = readers.get(y, [])
        if len(adds) != 1 or adds[0].op_type != "Add" or not adds[0].name:
            continue
        add = adds[0]
        slot = 1 if add.input[0] == y else 0
        b = add.input[slot]
        if b not in inits or consumers.get(b, 0) != 1:
            continue
        if tuple(inits[b].dims) not in ((channels,),):
            continue
        slots[node.name] = (add.name, slot, b, y, axis)
    return out, slots


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes holding a tensor (`value`) become initializers of the same name (exporters
    such as paddle2onnx write every weight that way), so a bias can be rewritten in place."""
    kept = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and not node.domain and set(attrs) == {"value"}:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def with_biases(
    model: onnx.ModelProto, fixes: Mapping[str, BiasFix], int8_layers: Collection[str]
) -> onnx.ModelProto:
    """A copy whose INT8 layers carry their corrected bias (the others their original one)."""
    values = {
        f.tensor: (f.corrected if f.layer in int8_layers else f.original) for f in fixes.values()
    }
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.name in values:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(values[init.name], init.name))
    return out


def correct_biases(
    model: onnx.ModelProto,
    reference: onnx.ModelProto,
    build,
    feeds: Sequence[Mapping[str, np.ndarray]],
    slots: Mapping[str, tuple[str, int, str, str, int]],
    passes: int = BIAS_PASSES,
) -> dict[str, BiasFix]:
    """layer -> BiasFix, from `passes` runs of `build(model with biases)` (the full Q/DQ model)
    against one run of `reference` (FP32) on `feeds`. `model` is bias_slots' output."""
    if not slots:
        return {}
    inits = {i.name: i for i in model.graph.initializer}
    axes = {s[3]: s[4] for s in slots.values()}
    ref_names = {o for n in reference.graph.node for o in n.output}
    ref_model = reference if all(a in ref_names for a in axes) else model
    ref = channel_means(ref_model, feeds, axes)
    fixes = {
        layer: BiasFix(
            layer,
            node,
            slot,
            b,
            y,
            axis,
            numpy_helper.to_array(inits[b]).astype(np.float32),
            numpy_helper.to_array(inits[b]).astype(np.float32),
        )
        for layer, (node, slot, b, y, axis) in slots.items()
    }
    for _ in range(passes):
        current = with_biases(model, fixes, fixes)
        got = channel_means(build(current), feeds, axes)
        new = {}
        for layer, fix in fixes.items():
            if fix.output not in got or fix.output not in ref:
                new[layer] = fix
                continue
            shift = (got[fix.output] - ref[fix.output]).reshape(fix.corrected.shape)
            corrected = (fix.corrected.astype(np.float64) - shift).astype(np.float32)
            new[layer] = BiasFix(**{**fix.__dict__, "corrected": corrected})
        fixes = new
    return fixes


def first_rows(
    batches: Sequence[Mapping[str, np.ndarray]], rows: int, whole: bool = False
) -> list[dict]:
    """The first `rows` rows of the batches (at least one batch; `whole`: batches never cut,
    for a model whose batch size is fixed)."""
    out, n = [], 0
    for feed in batches:
        if n >= rows:
            break
        count = max((len(v) for v in feed.values() if np.ndim(v)), default=1)
        take = count if whole else min(count, rows - n)
        out.append({k: v[:take] if np.ndim(v) else v for k, v in feed.items()})
        n += take
    return out


def local_biases(
    model: onnx.ModelProto,
    ranges: Mapping[str, float],
    feeds: Sequence[Mapping[str, np.ndarray]],
    slots: Mapping[str, tuple[str, int, str, str, int]],
) -> dict[str, BiasFix]:
    """layer -> BiasFix from each layer's own error: mean of op(Q(x), Q(W)) - op(x, W) per output
    channel, x the layer's FP32 input (Q as insert-qdq writes it: per-tensor activation scale,
    per-channel weights), from one run of the FP32 model with both twins of every layer beside
    it. `model` is bias_slots' output. An upstream layer's correction is not seen downstream,
    so corrections never add up along the network (the `correct_biases` passes can)."""
    import onnx_graphsurgeon as gs

    from ..passes._infra import export_graph
    from ..passes.insert_qdq import activation_scale, constant_values, weight_axis
    from .bias_correction import fake_quant_weight

    if not slots:
        return {}
    side = gs.import_onnx(model)
    nodes = {n.name: n for n in side.nodes}
    axes: dict[str, int] = {}
    pairs: dict[str, tuple[str, str]] = {}
    for i, (layer, slot) in enumerate(slots.items()):
        node = nodes[layer]
        x = node.inputs[0]
        w = constant_values(node.inputs[1])
        if w is None or x.name not in ranges:
            continue
        wq = fake_quant_weight(w, weight_axis(node, 1, tuple(w.shape))).astype(np.float32)
        scale = gs.Constant(f"__bc_scale_{i}", activation_scale(ranges[x.name]))
        zero = gs.Constant(f"__bc_zero_{i}", np.zeros((), np.int8))
        q = gs.Variable(f"__bc_q_{i}", dtype=np.int8)
        dq = gs.Variable(f"__bc_dq_{i}", dtype=np.float32)
        yq = gs.Variable(f"__bc_int8_{i}", dtype=np.float32)
        yf = gs.Variable(f"__bc_float_{i}", dtype=np.float32)
        side.nodes += [
            gs.Node("QuantizeLinear", inputs=[x, scale, zero], outputs=[q]),
            gs.Node("DequantizeLinear", inputs=[q, scale, zero], outputs=[dq]),
            gs.Node(
                node.op,
                inputs=[dq, gs.Constant(f"__bc_w_{i}", wq)],
                outputs=[yq],
                attrs=dict(node.attrs),
            ),
            gs.Node(node.op, inputs=[x, node.inputs[1]], outputs=[yf], attrs=dict(node.attrs)),
        ]
        side.outputs += [yq, yf]
        axes[yq.name] = axes[yf.name] = slot[4]
        pairs[layer] = (yq.name, yf.name)
    means = channel_means(export_graph(side), feeds, axes)
    inits = {i.name: i for i in model.graph.initializer}
    fixes = {}
    for layer, (yq, yf) in pairs.items():
        node_, slot_, b, y, axis = slots[layer]
        original = numpy_helper.to_array(inits[b]).astype(np.float32)
        shift = (means[yq] - means[yf]).reshape(original.shape)
        corrected = (original.astype(np.float64) - shift).astype(np.float32)
        fixes[layer] = BiasFix(layer, node_, slot_, b, y, axis, original, corrected)
    return fixes
