"""Layer fusions ncnn's own tools apply, done on the .param: activations into the layer before
them (what `ncnnoptimize` does), and requantization between INT8 convolutions (what
`ncnn2int8` does last).

Activation fusion (FP32 and INT8 alike): a Convolution, ConvolutionDepthWise or InnerProduct
without an activation whose output feeds only a ReLU, Clip, Sigmoid, Mish or HardSwish takes it
as its `9=` activation_type (1 ReLU, 2 leaky ReLU, 3 Clip, 4 Sigmoid, 5 Mish, 6 HardSwish; ncnn
src/layer/fused_activation.h) with its parameters in `10=`; the activation layer goes. Nothing
in the .bin changes. pnnx fuses ReLU itself but leaves HardSwish (MobileNetV3, PP-LCNet) as a
layer of its own, which keeps INT8 convolutions apart.

Requantize fusion (INT8 only): an INT8 Convolution/ConvolutionDepthWise whose output goes
straight (or through a Split whose every output does) into INT8 Convolution/ConvolutionDepthWise
layers writes INT8 itself: `int8_scale_term` + 100 and the consumer's input scale appended after
its own input scale in the .bin (Convolution::load_model reads it as `top_blob_int8_scales`).
The consumer then skips its quantize step, and the FP32 blob between them is never made. Where
the consumers behind a Split have different input scales, nothing is fused (ncnn2int8 takes the
first consumer's scale for all of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .param import Layer, Param

FUSE_INTO = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
REQUANTIZE = ("Convolution", "ConvolutionDepthWise")


def _fmt(value: float) -> str:
    return f"{float(np.float32(value)):.9g}"


def _activation(layer: Layer) -> tuple[int, list[float]] | None:
    """(activation_type, params) that ncnn's fused activation computes for `layer`, or None."""
    g = layer.get
    if layer.type == "ReLU":
        slope = float(g(0, 0.0))
        return (1, []) if slope == 0 else (2, [slope])
    if layer.type == "Clip":
        return 3, [float(g(0, -np.finfo(np.float32).max)), float(g(1, np.finfo(np.float32).max))]
    if layer.type == "Sigmoid":
        return 4, []
    if layer.type == "Mish":
        return 5, []
    if layer.type == "HardSwish":
        return 6, [float(g(0, 0.2)), float(g(1, 0.5))]
    return None


def _consumers(param: Param) -> dict[str, list[Layer]]:
    out: dict[str, list[Layer]] = {}
    for layer in param.layers:
        for blob in layer.bottoms:
            out.setdefault(blob, []).append(layer)
    return out


@dataclass(frozen=True)
class Fused:
    layer: str
    into: str  # the activation layer removed


def fuse_activations(param: Param) -> tuple[Param, list[Fused]]:
    """`param` with each fusable activation moved into the layer before it (a new Param)."""
    consumers = _consumers(param)
    removed: set[str] = set()
    fused: list[Fused] = []
    layers = [
        Layer(x.type, x.name, list(x.bottoms), list(x.tops), list(x.params)) for x in param.layers
    ]
    by_name = {x.name: x for x in layers}
    for layer in layers:
        if layer.type not in FUSE_INTO or layer.get(9, 0) or len(layer.tops) != 1:
            continue
        after = consumers.get(layer.tops[0], [])
        if len(after) != 1 or len(after[0].bottoms) != 1 or len(after[0].tops) != 1:
            continue
        act = _activation(after[0])
        if act is None:
            continue
        kind, values = act
        layer.set(9, kind)
        layer.params = [(k, v) for k, v in layer.params if k != -23310]
        if values:
            layer.params.append((-23310, ",".join([str(len(values))] + [_fmt(v) for v in values])))
        layer.tops = list(after[0].tops)
        removed.add(after[0].name)
        fused.append(Fused(layer.name, after[0].name))
    kept = [by_name[x.name] for x in param.layers if x.name not in removed]
    return Param(kept, param.blob_count - len(removed)), fused


def requantize_targets(param: Param, int8_inputs: dict[str, float]) -> dict[str, float]:
    """INT8 layer -> the output scale it can requantize to (ncnn2int8's `fuse_requantize`).

    `int8_inputs`: the layers written INT8 and their input scales.
    """
    consumers = _consumers(param)
    targets: dict[str, float] = {}

    def int8_conv(layer: Layer) -> bool:
        return layer.type in REQUANTIZE and layer.name in int8_inputs and len(layer.bottoms) == 1

    for layer in param.layers:
        if not int8_conv(layer) or len(layer.tops) != 1:
            continue
        after = consumers.get(layer.tops[0], [])
        if len(after) != 1:
            continue
        nxt = after[0]
        if nxt.type == "Split":
            ends = [c for top in nxt.tops for c in consumers.get(top, [])]
            if len(ends) != len(nxt.tops) or not all(int8_conv(c) for c in ends):
                continue
            scales = {np.float32(int8_inputs[c.name]) for c in ends}
            if len(scales) != 1:
                continue
            targets[layer.name] = float(scales.pop())
        elif int8_conv(nxt):
            targets[layer.name] = float(np.float32(int8_inputs[nxt.name]))
    return targets
