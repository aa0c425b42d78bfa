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
first consumer's scale for all of them). Beyond ncnn2int8, an INT8 InnerProduct reading the
convolution's output directly or through a Flatten is a consumer too: ncnn's Flatten passes
int8 blobs through (`forward_int8`) and InnerProduct skips its quantize step for an int8 input
(src/layer/{x86,arm}/innerproduct_*.cpp `forward_int8_*`); on the digits CNN this saves a
dequantize and a quantize pass of its last convolution.

Residual folding (FP32 and INT8 alike, before the rest): `y = x + Conv(x)` where the Convolution
keeps the shape (stride 1, `same` padding, as many outputs as inputs, no activation, one group)
becomes one Convolution whose kernel has the identity added at its centre tap (RepVGG's
re-parameterisation, Ding et al. 2021): the BinaryOp and the Split before it go, the activation
after the add can then be fused into the convolution, and in INT8 the layer before can
requantize into it (the add needed FP32 on both sides).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .param import TAG_FP32, Layer, Param, Segment, read_floats

FUSE_INTO = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
REQUANTIZE = ("Convolution", "ConvolutionDepthWise")
INT8_INPUT = ("Convolution", "ConvolutionDepthWise", "InnerProduct")  # take an int8 blob as is


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


def _copy(layers: list[Layer]) -> list[Layer]:
    return [Layer(x.type, x.name, list(x.bottoms), list(x.tops), list(x.params)) for x in layers]


def _shape_keeping_conv(layer: Layer) -> bool:
    """A plain FP32 Convolution whose output has its input's shape (so `x + conv(x)` is one
    convolution): stride 1, odd kernel, `same` zero padding, as many outputs as inputs."""
    g = layer.get
    if layer.type != "Convolution" or len(layer.bottoms) != 1 or len(layer.tops) != 1:
        return False
    if g(9, 0) or g(8, 0) or g(19, 0) or float(g(18, 0.0)) != 0.0:
        return False
    kw, dw, pl = int(g(1)), int(g(2, 1)), int(g(4, 0))
    kh, dh, pt = int(g(11, kw)), int(g(12, dw)), int(g(14, pl))
    pads = (pl, int(g(15, pl)), pt, int(g(16, pt)))
    if int(g(3, 1)) != 1 or int(g(13, g(3, 1))) != 1 or kw % 2 == 0 or kh % 2 == 0:
        return False
    if pads != (dw * (kw - 1) // 2,) * 2 + (dh * (kh - 1) // 2,) * 2:
        return False
    out = int(g(0))
    return out > 0 and int(g(6)) == out * out * kw * kh


def fold_residuals(
    param: Param, bin_bytes: bytes, segments: dict[str, list[Segment]]
) -> tuple[Param, bytes, list[str]]:
    """`param` and its .bin with each `x + Conv(x)` folded into the Convolution (identity added
    at the kernel's centre tap); the names of the folded convolutions."""
    layers = _copy(param.layers)
    producer = {top: layer for layer in layers for top in layer.tops}
    consumers = _consumers(Param(layers, param.blob_count))

    def root(blob: str) -> str:
        src = producer.get(blob)
        return root(src.bottoms[0]) if src is not None and src.type == "Split" else blob

    new_weights: dict[str, np.ndarray] = {}
    removed: set[str] = set()
    freed: set[str] = set()  # blobs only the removed adds read
    for add in layers:
        if add.type != "BinaryOp" or int(add.get(0, 0)) != 0 or add.get(1, 0):
            continue
        if len(add.bottoms) != 2 or len(add.tops) != 1:
            continue
        for a, b in (add.bottoms, add.bottoms[::-1]):
            conv = producer.get(a)
            if (
                conv is None
                or conv.name in new_weights
                or not _shape_keeping_conv(conv)
                or [c.name for c in consumers.get(a, [])] != [add.name]
                or root(b) != root(conv.bottoms[0])
                or a == b
            ):
                continue
            out, kw, kh = int(conv.get(0)), int(conv.get(1)), int(conv.get(11, conv.get(1)))
            w = read_floats(bin_bytes, segments[conv.name][0]).reshape(out, out, kh, kw).copy()
            w[np.arange(out), np.arange(out), kh // 2, kw // 2] += np.float32(1.0)
            new_weights[conv.name] = w
            conv.tops = list(add.tops)
            consumers[b] = [c for c in consumers.get(b, []) if c is not add]
            if not consumers[b]:
                freed.add(b)
            removed.add(add.name)
            break
    layers = [x for x in layers if x.name not in removed]
    layers = _drop_split_outputs(layers, freed)
    chunks = []
    for layer in layers:
        segs = segments[layer.name]
        if layer.name in new_weights:
            chunks.append(np.uint32(TAG_FP32).tobytes() + new_weights[layer.name].tobytes())
            segs = segs[1:]
        chunks += [bin_bytes[s.offset : s.offset + s.nbytes] for s in segs]
    blobs = {t for x in layers for t in x.tops}
    return Param(layers, len(blobs)), b"".join(chunks), sorted(new_weights)


def _drop_split_outputs(layers: list[Layer], freed: set[str]) -> list[Layer]:
    """Splits without their `freed` outputs; a Split left with one output is bypassed."""
    rename: dict[str, str] = {}
    kept = []
    for layer in layers:
        layer.bottoms = [rename.get(b, b) for b in layer.bottoms]
        if layer.type == "Split":
            layer.tops = [t for t in layer.tops if t not in freed]
            if len(layer.tops) == 1:
                rename[layer.tops[0]] = layer.bottoms[0]
                continue
            if not layer.tops:
                continue
        kept.append(layer)
    return kept


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
    """INT8 layer -> the output scale it can requantize to (ncnn2int8's `fuse_requantize`, plus
    InnerProduct consumers, directly or through a Flatten).

    `int8_inputs`: the layers written INT8 and their input scales.
    """
    consumers = _consumers(param)
    targets: dict[str, float] = {}

    def int8_layer(layer: Layer, types: tuple[str, ...]) -> bool:
        return layer.type in types and layer.name in int8_inputs and len(layer.bottoms) == 1

    def reader(layer: Layer) -> Layer | None:
        """The INT8 layer that reads `layer`'s output as int8, if any."""
        if int8_layer(layer, INT8_INPUT):
            return layer
        if layer.type == "Flatten" and len(layer.tops) == 1:
            after = consumers.get(layer.tops[0], [])
            if len(after) == 1 and int8_layer(after[0], ("InnerProduct",)):
                return after[0]
        return None

    for layer in param.layers:
        if not int8_layer(layer, REQUANTIZE) or len(layer.tops) != 1:
            continue
        after = consumers.get(layer.tops[0], [])
        if len(after) != 1:
            continue
        nxt = after[0]
        if nxt.type == "Split":
            ends = [c for top in nxt.tops for c in consumers.get(top, [])]
            if len(ends) != len(nxt.tops) or not all(int8_layer(c, REQUANTIZE) for c in ends):
                continue
            scales = {np.float32(int8_inputs[c.name]) for c in ends}
            if len(scales) != 1:
                continue
            targets[layer.name] = float(scales.pop())
        elif (end := reader(nxt)) is not None:
            targets[layer.name] = float(np.float32(int8_inputs[end.name]))
    return targets
