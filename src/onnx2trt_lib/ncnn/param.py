"""ncnn's model files: the text .param (layers, blobs, `id=value` params) and the .bin walked
layer by layer, so single weights can be replaced and everything else copied byte for byte.

Layouts follow ncnn's loaders (Tencent/ncnn src/layer/*.cpp `load_param`/`load_model`,
src/modelbin.cpp): a *tagged* array starts with a 4-byte tag (0: float32, 0x01306B47: float16,
0x000D4B38: int8, 0x0002C056: float32; other non-zero: a 256-entry float table + uint8 indices),
a *raw* array is float32 with no tag; every array is padded to 4 bytes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Onnx2TrtError

MAGIC = 7767517
TAG_FP32 = 0
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_RAW = 0x0002C056

# layer types ncnn's int8 path quantizes from a table (what ncnn2table/ncnn2int8 handle for
# activations); types with weight-only int8 (Embed, Gemm, RNN, ...) are not written here
QUANTIZED_TYPES = ("Convolution", "ConvolutionDepthWise", "InnerProduct")


class NcnnFormatError(Onnx2TrtError):
    """A .param/.bin that this module cannot read (or a layer whose weights it cannot walk)."""


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: list[tuple[int, str]] = field(default_factory=list)  # (id, raw text), in file order

    def get(self, key: int, default: int | float = 0) -> int | float:
        for k, v in self.params:
            if k == key:
                return (
                    float(v)
                    if any(c in v for c in ".eE") and not v.lstrip("-").isdigit()
                    else int(v)
                )
        return default

    def set(self, key: int, value: int) -> None:
        self.params = [(k, v) for k, v in self.params if k != key] + [(key, str(value))]

    def line(self) -> str:
        head = f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}"
        blobs = " ".join(self.bottoms + self.tops)
        params = " ".join(f"{k}={v}" for k, v in self.params)
        return " ".join(p for p in (head, blobs, params) if p)


@dataclass
class Param:
    layers: list[Layer]
    blob_count: int

    def text(self) -> str:
        lines = [str(MAGIC), f"{len(self.layers)} {self.blob_count}"]
        lines += [layer.line() for layer in self.layers]
        return "\n".join(lines) + "\n"

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def read_param(path: str | os.PathLike) -> Param:
    """Parse a text .param (what pnnx and ncnn2int8 write)."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    try:
        if int(lines[0]) != MAGIC:
            raise ValueError(f"magic {lines[0]}")
        layer_count, blob_count = (int(t) for t in lines[1].split())
        layers = []
        for ln in lines[2 : 2 + layer_count]:
            tok = ln.split()
            nb, nt = int(tok[2]), int(tok[3])
            bottoms, tops = tok[4 : 4 + nb], tok[4 + nb : 4 + nb + nt]
            params = []
            for item in tok[4 + nb + nt :]:
                key, value = item.split("=", 1)
                params.append((int(key), value))
            layers.append(Layer(tok[0], tok[1], bottoms, tops, params))
        if len(layers) != layer_count:
            raise ValueError(f"{layer_count} layers declared, {len(layers)} found")
    except (ValueError, IndexError) as exc:
        raise NcnnFormatError(f"{path} is not an ncnn .param file ({exc})") from None
    return Param(layers, blob_count)


@dataclass
class Segment:
    """One array of a layer in the .bin: where it starts, its element count, tag (None = raw)."""

    offset: int
    nbytes: int
    count: int
    tag: int | None


def _tagged_size(buf: bytes, offset: int, count: int) -> tuple[int, int]:
    if offset + 4 > len(buf):
        raise NcnnFormatError("the .bin ends inside a weight tag")
    (tag,) = struct.unpack_from("<I", buf, offset)
    if tag in (TAG_FP32, TAG_FP32_RAW):
        size = 4 * count
    elif tag == TAG_FP16:
        size = (2 * count + 3) // 4 * 4
    elif tag == TAG_INT8:
        size = (count + 3) // 4 * 4
    elif buf[offset] == 0:  # f0 == 0 with other flag bytes: plain float32 as ncnn reads it
        size = 4 * count
    else:
        size = 256 * 4 + (count + 3) // 4 * 4
    return tag, 4 + size


def _arrays(layer: Layer) -> list[tuple[int, bool]] | None:
    """(element count, tagged) of each array `layer` loads, in order; None for an unknown type."""
    t, g = layer.type, layer.get
    if t in (
        "Convolution",
        "ConvolutionDepthWise",
        "Convolution1D",
        "Convolution3D",
        "ConvolutionDepthWise1D",
        "ConvolutionDepthWise3D",
        "Deconvolution",
        "DeconvolutionDepthWise",
        "Deconvolution1D",
        "Deconvolution3D",
        "DeconvolutionDepthWise1D",
        "DeconvolutionDepthWise3D",
    ):
        dynamic = g(28 if t.startswith("Deconvolution") and "1D" not in t and "3D" not in t else 19)
        if dynamic:
            return []
        out = [(int(g(6)), True)] + ([(int(g(0)), False)] if g(5) else [])
        int8 = int(g(8))
        if int8 and t == "Convolution":
            out += [(int(g(0)), False), (1, False)] + ([(1, False)] if int8 > 100 else [])
        elif int8 and t == "ConvolutionDepthWise":
            per = int(g(7, 1)) if int8 in (1, 101) else 1
            out += [(per, False), (1, False)] + ([(1, False)] if int8 > 100 else [])
        elif int8:
            return None
        return out
    if t == "InnerProduct":
        out = [(int(g(2)), True)] + ([(int(g(0)), False)] if g(1) else [])
        if g(8):
            out += [(int(g(0)), False), (1, False)]
        return out
    if t == "BatchNorm":
        return [(int(g(0)), False)] * 4
    if t == "Scale":
        n = int(g(0))
        return [] if n == -233 else [(n, False)] + ([(n, False)] if g(1) else [])
    if t == "PReLU":
        return [(int(g(0)), False)]
    if t == "Bias":
        return [(int(g(0)), False)]
    if t == "Normalize":
        return [(int(g(3)), False)]
    if t in ("InstanceNorm", "LayerNorm", "RMSNorm", "GroupNorm"):
        n = int(g(1) if t == "GroupNorm" else g(0))
        affine = g(3 if t == "GroupNorm" else 2, 1)
        if not affine:
            return []
        return [(n, False)] if t == "RMSNorm" else [(n, False), (n, False)]
    if t == "MemoryData":
        dims = [int(g(0)), int(g(1)), int(g(11)), int(g(2))]
        count = int(np.prod([d for d in dims if d])) if any(dims) else 0
        return [(count, int(g(21, 1)) == 0)] if count else []
    if t == "Gemm":
        quantize = int(g(18))
        if quantize not in (0, 2):  # 2: ncnn2int8's int8 weights; others are block formats
            return None
        m, n, k = int(g(7)), int(g(8)), int(g(9))
        out = [(m * k, True)] if g(4) else []
        out += [(n * k, True)] if g(5) else []
        broadcast = int(g(10))
        if g(6) and broadcast != -1:
            sizes = {0: 1, 1: m, 2: m, 3: n * m, 4: n}
            if broadcast not in sizes:
                return None
            out.append((sizes[broadcast], True))
        if quantize:  # Gemm::load_model: A's per-row scales, then B's one scale
            out += [(m, False)] if g(4) else []
            out += [(1, False)] if g(5) else []
        return out
    if t == "MultiHeadAttention":
        if g(18):
            return None
        embed = int(g(0))
        qdim = int(g(2)) // embed if embed else 0
        kdim, vdim = int(g(3, embed)), int(g(4, embed))
        return [
            (embed * qdim, True),
            (embed, False),
            (embed * kdim, True),
            (embed, False),
            (embed * vdim, True),
            (embed, False),
            (qdim * embed, True),
            (qdim, False),
        ]
    if t == "Embed":
        if g(18):
            return None
        return [(int(g(3)), True)] + ([(int(g(0)), False)] if g(2) else [])
    return None


# types known to load nothing from the .bin
_NO_WEIGHTS = {
    "Input", "ReLU", "Sigmoid", "TanH", "Swish", "HardSwish", "HardSigmoid", "Mish", "GELU",
    "ELU", "SELU", "Clip", "Pooling", "Pooling1D", "Pooling3D", "Split", "Concat", "Slice",
    "Crop", "Eltwise", "BinaryOp", "UnaryOp", "Reshape", "Flatten", "Permute", "Interp",
    "Softmax", "Padding", "Dropout", "Noop", "ShuffleChannel", "PixelShuffle", "Reorg",
    "Squeeze", "ExpandDims", "Reduction", "ArgMax", "Cast", "MatMul", "Sum",
    "GatherElements", "Tile", "CopyTo", "Shrink", "Erf", "Log", "Exp", "Power", "Threshold",
    "AbsVal", "BNLL", "Bias",
}  # fmt: skip


def walk_bin(param: Param, bin_bytes: bytes) -> dict[str, list[Segment]]:
    """Each layer's arrays in the .bin; refuses a layer type whose weight layout is unknown."""
    offset = 0
    segments: dict[str, list[Segment]] = {}
    for layer in param.layers:
        arrays = _arrays(layer)
        if arrays is None:
            if layer.type in _NO_WEIGHTS:
                arrays = []
            else:
                raise NcnnFormatError(
                    f"layer {layer.name} ({layer.type}): its weight layout in the .bin is not known here"
                )
        segs = []
        for count, tagged in arrays:
            if tagged:
                tag, size = _tagged_size(bin_bytes, offset, count)
            else:
                tag, size = None, (4 * count + 3) // 4 * 4
            segs.append(Segment(offset, size, count, tag))
            offset += size
        segments[layer.name] = segs
    if offset != len(bin_bytes):
        raise NcnnFormatError(
            f"the .bin holds {len(bin_bytes)} bytes but its layers account for {offset}; "
            "a layer type loads weights this reader does not know"
        )
    return segments


def read_floats(bin_bytes: bytes, seg: Segment) -> np.ndarray:
    """A float32/float16 array of the .bin as float32 (int8 and table-quantized ones refused)."""
    start = seg.offset + (4 if seg.tag is not None else 0)
    if seg.tag in (None, TAG_FP32, TAG_FP32_RAW) or (
        seg.tag is not None
        and bin_bytes[seg.offset] == 0
        and seg.tag != TAG_FP16
        and seg.tag != TAG_INT8
    ):
        return np.frombuffer(bin_bytes, dtype="<f4", count=seg.count, offset=start).astype(
            np.float32
        )
    if seg.tag == TAG_FP16:
        return np.frombuffer(bin_bytes, dtype="<f2", count=seg.count, offset=start).astype(
            np.float32
        )
    raise NcnnFormatError("weights already quantized (int8 or table); give the FP32 model")
