"""Cross-layer equalisation: per-channel weight ranges of consecutive convolutions made equal.

Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction"
(arXiv:1906.04721), section 4.1. For Conv1 -> act -> Conv2 with a positively homogeneous
`act` (Relu, none; act(x / s) = act(x) / s for s > 0), output channel i of Conv1 is divided by
s_i (its weights and bias) and input channel i of Conv2 multiplied by s_i: the FP32 model
computes the same function. With r1_i = max |W1[i]| and r2_i = max |W2[:, i]|,
s_i = sqrt(r1_i / r2_i) makes both ranges sqrt(r1_i * r2_i), so a per-channel (Conv1) and a
per-tensor-like spread (Conv2's input channels share one output-channel scale) both lose less
to INT8. Depthwise-separable blocks (a depthwise Conv between two pointwise ones) benefit most:
the depthwise kernels' ranges differ by orders of magnitude across channels.

Relu6 (Clip(0, 6)) is not homogeneous: it is rewritten as Relu followed by Min(x, 6 / s) with a
per-channel bound, which keeps the FP32 output exact and is plain ONNX that TensorRT fuses as a
pointwise op. Pairs are equalised repeatedly (a Conv can be Conv2 of one pair and Conv1 of the
next) until the scales stay within EQUAL_TOL of 1.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..passes._infra import PassResult, SkippedNode, result
from ..passes.insert_qdq import constant_values

EQUAL_TOL = 1e-3  # a pair whose scales are all within this of 1 is already equalised
MAX_ROUNDS = 20
MIN_RANGE = 1e-12  # a channel with (almost) no weight on one side keeps scale 1


def _only_consumer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


def _const(node: gs.Node, slot: int) -> gs.Constant | None:
    """The node's constant input at `slot` when only this node reads it (a Constant node's output
    is turned into an initializer of the same name so that it can be rescaled in place)."""
    if len(node.inputs) <= slot:
        return None
    t = node.inputs[slot]
    if len(t.outputs) != 1:
        return None
    if not isinstance(t, gs.Constant):
        values = constant_values(t)
        if values is None:
            return None
        producer = t.inputs[0]
        t.inputs.clear()
        producer.outputs.clear()
        t = gs.Constant(t.name, np.array(values))
        node.inputs[slot] = t
    return t


def _clip_bounds(node: gs.Node) -> tuple[float, float] | None:
    """(min, max) of a Clip with constant bounds (attributes before opset 11, inputs after)."""
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    for slot, name in ((1, "lo"), (2, "hi")):
        if len(node.inputs) > slot and node.inputs[slot].name:
            values = constant_values(node.inputs[slot])
            if values is None:
                return None
            value = float(np.asarray(values).reshape(-1)[0])
            lo, hi = (value, hi) if name == "lo" else (lo, value)
    if lo is None or hi is None:
        return None
    return float(lo), float(hi)


class EqualizeCrossLayerPass:
    """Equalise per-channel weight ranges of Conv -> (Relu | Relu6 | nothing) -> Conv pairs."""

    name = "equalize"
    op_types: tuple[str, ...] = ("Conv",)

    def __init__(self, *, rounds: int | None = None) -> None:
        self.rounds = MAX_ROUNDS if rounds is None else int(rounds)

    def _pairs(self, graph: gs.Graph) -> tuple[list[tuple], list[SkippedNode]]:
        outputs = {t.name for t in graph.outputs}
        pairs, skipped = [], []
        for conv1 in graph.nodes:
            if conv1.op != "Conv" or not conv1.outputs:
                continue
            w1 = _const(conv1, 1)
            y = conv1.outputs[0]
            nxt = _only_consumer(y)
            if w1 is None or nxt is None or y.name in outputs:
                continue
            bn = None
            if nxt.op == "BatchNormalization" and _foldable_bn(nxt, outputs):
                bn, nxt = nxt, _only_consumer(nxt.outputs[0])
                if nxt is None:
                    continue
            act = None
            bounds = _clip_bounds(nxt) if nxt.op == "Clip" else None
            if nxt.op == "Relu" or bounds is not None:
                act = nxt
                if bounds is not None and bounds[0] != 0.0:
                    skipped.append(SkippedNode(act.name, act.op, "Clip with a non-zero minimum"))
                    continue
                if act.outputs[0].name in outputs:
                    continue
                nxt = _only_consumer(act.outputs[0])
            if nxt is None or nxt.op != "Conv":
                continue
            w2 = _const(nxt, 1)
            if w2 is None or len(conv1.inputs) > 2 and _const(conv1, 2) is None:
                skipped.append(
                    SkippedNode(nxt.name, "Conv", "weight or bias shared or not constant")
                )
                continue
            if w2.values.shape[1] * int(nxt.attrs.get("group", 1)) != w1.values.shape[0]:
                continue
            pairs.append((conv1, bn, act, nxt))
        return pairs, skipped

    def run(self, graph: gs.Graph) -> PassResult:
        found, skipped = self._pairs(graph)
        folded = 0
        for conv1, bn, _act, _conv2 in found:
            if bn is not None:
                _fold_bn(graph, conv1, bn)
                folded += 1
        pairs = [(c1, act, c2) for c1, _bn, act, c2 in found]
        total = {id(c1): np.ones(c1.inputs[1].values.shape[0]) for c1, _, _ in pairs}
        for _ in range(self.rounds):
            worst = 0.0
            for conv1, _act, conv2 in pairs:
                s = _equalise(conv1, conv2)
                total[id(conv1)] *= s
                worst = max(worst, float(np.max(np.abs(s - 1.0))))
            if worst <= EQUAL_TOL:
                break
        changed = [p for p in pairs if np.max(np.abs(total[id(p[0])] - 1.0)) > EQUAL_TOL]
        relu6 = 0
        for conv1, act, _conv2 in changed:
            if act is not None and act.op == "Clip":
                _per_channel_clip(graph, act, total[id(conv1)])
                relu6 += 1
        for conv1, _act, conv2 in pairs:  # scales near 1: leave those weights as they were
            if not any(p[0] is conv1 for p in changed):
                _apply(conv1, conv2, 1.0 / total[id(conv1)])
        counts = {"pairs": len(changed), "relu6_rewritten": relu6, "bn_folded": folded}
        return result(self.name, counts, skipped)


def _in_channel_range(w2: np.ndarray, group: int) -> np.ndarray:
    """max |W2[:, i]| per input channel i of a (grouped) Conv2: W2 is [Cout, Cin/g, k...]."""
    cout, cin_g = w2.shape[:2]
    a = np.abs(w2.astype(np.float64)).reshape(group, cout // group, cin_g, -1)
    return a.max(axis=(1, 3)).reshape(-1)  # [group * cin_g] = input channels in order


def _scale_in_channels(w2: np.ndarray, group: int, s: np.ndarray) -> np.ndarray:
    cout, cin_g = w2.shape[:2]
    shaped = w2.astype(np.float64).reshape(group, cout // group, cin_g, -1)
    shaped = shaped * s.reshape(group, 1, cin_g, 1)
    return shaped.reshape(w2.shape)


def _equalise(conv1: gs.Node, conv2: gs.Node) -> np.ndarray:
    w1, w2 = conv1.inputs[1], conv2.inputs[1]
    group = int(conv2.attrs.get("group", 1))
    r1 = np.abs(w1.values.astype(np.float64)).reshape(w1.values.shape[0], -1).max(axis=1)
    r2 = _in_channel_range(w2.values, group)
    ok = (r1 > MIN_RANGE) & (r2 > MIN_RANGE)
    s = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)
    _apply(conv1, conv2, s)
    return s


def _apply(conv1: gs.Node, conv2: gs.Node, s: np.ndarray) -> None:
    w1, w2 = conv1.inputs[1], conv2.inputs[1]
    shape1 = (-1,) + (1,) * (w1.values.ndim - 1)
    dtype = w1.values.dtype
    w1.values = (w1.values.astype(np.float64) / s.reshape(shape1)).astype(dtype)
    if len(conv1.inputs) > 2 and isinstance(conv1.inputs[2], gs.Constant):
        b = conv1.inputs[2]
        b.values = (b.values.astype(np.float64) / s).astype(b.values.dtype)
    group = int(conv2.attrs.get("group", 1))
    w2.values = _scale_in_channels(w2.values, group, s).astype(w2.values.dtype)


def _per_channel_clip(graph: gs.Graph, clip: gs.Node, s: np.ndarray) -> None:
    """Clip(x, 0, hi) on channels divided by s -> Min(Relu(x), hi / s) with a [C, 1, ...] bound."""
    bounds = _clip_bounds(clip)
    if bounds is None:  # pairs are only formed with a constant-bound Clip
        raise ValueError(f"Clip {clip.name!r} has no constant bounds")
    hi = bounds[1]
    x, y = clip.inputs[0], clip.outputs[0]
    rank = len(x.shape) if x.shape is not None else 4
    bound = (hi / s).astype(np.float32).reshape((-1,) + (1,) * max(rank - 2, 0))
    mid = gs.Variable(f"{y.name}_relu", dtype=y.dtype, shape=y.shape)
    relu = gs.Node("Relu", name=f"{clip.name}_relu" if clip.name else "", inputs=[x], outputs=[mid])
    mn = gs.Node(
        "Min",
        name=clip.name,
        inputs=[mid, gs.Constant(f"{y.name}_per_channel_max", bound)],
        outputs=[y],
    )
    clip.outputs = []
    clip.inputs = []
    graph.nodes.remove(clip)
    graph.nodes.extend([relu, mn])


def _foldable_bn(bn: gs.Node, outputs: set[str]) -> bool:
    """Inference BatchNormalization with constant parameters, one output, read by one node."""
    params = [constant_values(t) for t in bn.inputs[1:5]]
    out = bn.outputs[0]
    return (
        len(bn.inputs) == 5
        and all(p is not None for p in params)
        and len([o for o in bn.outputs if o.name]) == 1
        and out.name not in outputs
        and len(out.outputs) == 1
    )


def _required_values(tensor: gs.Tensor) -> np.ndarray:
    """The constant value of a tensor that _foldable_bn already found constant."""
    values = constant_values(tensor)
    if values is None:
        raise ValueError(f"{tensor.name!r} is not a constant")
    return values


def _fold_bn(graph: gs.Graph, conv: gs.Node, bn: gs.Node) -> None:
    """Conv -> BN becomes one Conv: w * g / sqrt(v + eps) per output channel, b folded likewise
    (what TensorRT does at build time; needed here because the BN sits between the pair)."""
    gamma, beta, mean, var = (_required_values(t).astype(np.float64) for t in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    k = gamma / np.sqrt(var + eps)
    w = conv.inputs[1]
    dtype = w.values.dtype
    w.values = (w.values.astype(np.float64) * k.reshape((-1,) + (1,) * (w.values.ndim - 1))).astype(
        dtype
    )
    old = (
        conv.inputs[2].values.astype(np.float64)
        if len(conv.inputs) > 2 and isinstance(conv.inputs[2], gs.Constant)
        else np.zeros(len(k))
    )
    bias = gs.Constant(f"{conv.name or w.name}_bn_bias", ((old - mean) * k + beta).astype(dtype))
    if len(conv.inputs) > 2:
        conv.inputs[2] = bias
    else:
        conv.inputs.append(bias)
    y = bn.outputs[0]
    bn.outputs = []
    bn.inputs = []
    graph.nodes.remove(bn)
    conv.outputs = [y]
