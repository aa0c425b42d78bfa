"""SmoothQuant: move activation outliers of MatMul/Gemm inputs into the weights, per input channel.

Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models" (arXiv:2211.10438), section 4. Activations after LayerNorm or a residual Add
have a few channels far larger than the rest; one per-tensor INT8 scale then leaves the other
channels a handful of levels. With X @ W = (X / s) @ (diag(s) W) and

    s_j = max |X_j| ** alpha / max |W_j| ** (1 - alpha)

(alpha 0.5: the difficulty is split evenly), the activation's channel ranges shrink and the
weights, quantized per output channel, absorb the spread. The FP32 function is unchanged.

X / s is folded into a LayerNormalization's scale and bias when the LayerNorm feeds only the
smoothed MatMuls; otherwise a Mul by the constant 1/s is inserted before them (plain ONNX: a
pointwise layer TensorRT fuses with the following Q). MatMuls reading the same X (Q, K and V
projections) share one s, from the largest weight of each channel over all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..passes._infra import PassResult, SkippedNode, _carry_model_metadata, export_graph, result
from ..passes.insert_qdq import constant_values
from ._stats import reduce_tensors

DEFAULT_ALPHA = 0.5
SOURCES = frozenset({"LayerNormalization", "Add"})  # where outlier channels come from
SCALE_LIMITS = (1e-5, 1e5)
UNCHANGED_TOL = 1e-3


def _weight(node: gs.Node) -> tuple[np.ndarray, int] | None:
    """The constant weight of a MatMul/Gemm and its input-channel axis (rows of [K, N])."""
    if len(node.inputs) < 2:
        return None
    values = constant_values(node.inputs[1])
    if values is None or values.ndim != 2 or len(node.inputs[1].outputs) != 1:
        return None
    if node.op == "Gemm":
        if int(node.attrs.get("transA", 0)):
            return None
        return values, 1 if int(node.attrs.get("transB", 0)) else 0
    return values, 0


def _set_weight(node: gs.Node, values: np.ndarray) -> None:
    old = node.inputs[1]
    if old.inputs:  # a Constant node's output: becomes an initializer of the same name
        producer = old.inputs[0]
        old.inputs.clear()
        producer.outputs.clear()
    node.inputs[1] = gs.Constant(old.name, values)


class SmoothQuant:
    """Per-channel scale migration for MatMul/Gemm whose input comes from LayerNorm or an Add."""

    name = "smooth-quant"

    def __init__(self, *, alpha: float | None = None) -> None:
        self.alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"smooth-quant alpha {self.alpha} must be in [0, 1]")

    def groups(self, graph: gs.Graph) -> tuple[dict[str, list[gs.Node]], list[SkippedNode]]:
        """Activation name -> the MatMul/Gemm nodes that read it as their data input."""
        found: dict[str, list[gs.Node]] = {}
        skipped: list[SkippedNode] = []
        for node in graph.nodes:
            if node.op not in ("MatMul", "Gemm") or not node.inputs:
                continue
            x = node.inputs[0]
            producer = x.inputs[0] if x.inputs else None
            if producer is None or producer.op not in SOURCES or constant_values(x) is not None:
                continue
            if _weight(node) is None:
                if constant_values(node.inputs[1]) is not None:
                    skipped.append(SkippedNode(node.name, node.op, "weight shared or not 2-D"))
                continue
            found.setdefault(x.name, []).append(node)
        return found, skipped

    def run(
        self, model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[onnx.ModelProto, PassResult]:
        graph = gs.import_onnx(model)
        groups, skipped = self.groups(graph)
        if not groups:
            return model, result(self.name, {"smoothed": 0, "folded_into_layernorm": 0}, skipped)

        def absmax(_name: str, value: np.ndarray, acc: np.ndarray | None) -> np.ndarray:
            m = np.abs(value.astype(np.float64)).reshape(-1, value.shape[-1]).max(axis=0)
            return m if acc is None else np.maximum(acc, m)

        xmax = reduce_tensors(model, feeds, list(groups), absmax)
        tensors = graph.tensors()
        outputs = {t.name for t in graph.outputs}
        smoothed = folded = 0
        for name, nodes in groups.items():
            if name not in xmax:
                continue
            weights = [w for w in map(_weight, nodes) if w is not None]
            if len(weights) != len(nodes):  # grouping admitted only nodes with a weight
                continue
            wmax = np.max(
                [np.abs(w.astype(np.float64)).max(axis=1 - axis) for w, axis in weights], axis=0
            )
            if wmax.shape != xmax[name].shape:
                skipped.append(SkippedNode(nodes[0].name, nodes[0].op, "channel count mismatch"))
                continue
            s = smoothing_scales(xmax[name], wmax, self.alpha)
            if np.max(np.abs(s - 1.0)) <= UNCHANGED_TOL:
                continue
            for node, (w, axis) in zip(nodes, weights, strict=True):
                shape = (-1, 1) if axis == 0 else (1, -1)
                _set_weight(node, (w.astype(np.float64) * s.reshape(shape)).astype(w.dtype))
            x = tensors[name]
            if _fold_into_layernorm(x, nodes, s, outputs):
                folded += 1
            else:
                _insert_mul(graph, x, nodes, s)
            smoothed += 1
        graph.cleanup().toposort()
        out = export_graph(graph)
        _carry_model_metadata(model, out)
        counts = {"smoothed": smoothed, "folded_into_layernorm": folded}
        return out, result(self.name, counts, skipped)


def smoothing_scales(xmax: np.ndarray, wmax: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = xmax_j^alpha / wmax_j^(1-alpha), within SCALE_LIMITS; 1 for a channel that is always
    0, the upper limit for one no weight reads (its values only cost the others INT8 levels)."""
    x = np.where(xmax > 0, xmax, 1.0)
    w = np.where(wmax > 0, wmax, 1.0)
    s = np.where(wmax > 0, x**alpha / w ** (1 - alpha), SCALE_LIMITS[1])
    return np.clip(np.where(xmax > 0, s, 1.0), *SCALE_LIMITS)


def _fold_into_layernorm(
    x: gs.Tensor, nodes: list[gs.Node], s: np.ndarray, outputs: set[str]
) -> bool:
    ln = x.inputs[0]
    if ln.op != "LayerNormalization" or x.name in outputs or len(ln.outputs) != 1:
        return False
    if {id(n) for n in x.outputs} != {id(n) for n in nodes}:
        return False
    if int(ln.attrs.get("axis", -1)) not in (-1, len(x.shape or ()) - 1):
        return False
    params = [p for p in map(constant_values, ln.inputs[1:3]) if p is not None]
    if len(params) != len(ln.inputs[1:3]) or any(len(t.outputs) != 1 for t in ln.inputs[1:3]):
        return False
    for slot, p in zip((1, 2), params, strict=False):
        scaled = (np.broadcast_to(p.astype(np.float64), s.shape) / s).astype(p.dtype)
        old = ln.inputs[slot]
        if old.inputs:
            old.inputs[0].outputs.clear()
            old.inputs.clear()
        ln.inputs[slot] = gs.Constant(old.name, scaled)
    return True


def _insert_mul(graph: gs.Graph, x: gs.Tensor, nodes: list[gs.Node], s: np.ndarray) -> None:
    inv = gs.Constant(f"{x.name}_smooth_inv_scale", (1.0 / s).astype(np.float32))
    smoothed = gs.Variable(f"{x.name}_smoothed", dtype=x.dtype, shape=x.shape)
    graph.nodes.append(gs.Node("Mul", name=f"{x.name}_smooth", inputs=[x, inv], outputs=[smoothed]))
    for node in nodes:
        node.inputs[0] = smoothed
