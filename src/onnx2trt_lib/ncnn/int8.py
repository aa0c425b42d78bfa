"""Weight scales and the INT8 ncnn model, as ncnn2table and ncnn2int8 make them.

Weight scales (ncnn2table): 127 / max|w| per output channel (Convolution, InnerProduct), per
group (ConvolutionDepthWise); 31 / max|w| for 3x3 stride-1 dilation-1 Convolution (ncnn's int8
Winograd F(4,3) needs 6-bit weights). A channel of zeros gets 1 (ncnn2table would write inf).

INT8 model (ncnn2int8): weights rounded half away from zero and clamped to [-127, 127], stored
with the int8 tag; `8=` int8_scale_term = 2 (Convolution, InnerProduct) or 1
(ConvolutionDepthWise, per-group scales); the weight scales and the input scale follow the bias
as raw float32. Layers without a table entry are copied unchanged. With `requantize` (the
default, as ncnn2int8 does), an INT8 convolution feeding INT8 convolutions writes INT8 itself
(`8=` 101/102 and the next layer's input scale after its own: fuse.requantize_targets). Unlike
ncnn2int8, the other layers keep FP32 weights (ncnn2int8 stores them as FP16). With `gemm`,
Gemm layers with constant transposed weights get ncnn2int8's table-free INT8 (`18=2`: int8
weights with one scale for the matrix, appended after C; ncnn quantizes A per row at run time).
With `narrow_winograd_off` (the default on x86), INT8 3x3 stride-1 Convolutions reading at most
16 channels, which ncnn's INT8 path would run as Winograd F(4,3) whatever the size, get the
layer feature mask `31=64` (no Winograd; ncnn docs/developer-guide/layer-feat-mask.md) and run
as im2col + int8 GEMM: measured on an AVX-512 VNNI x86 CPU, 0.67-0.88x the Winograd time for
1-16 input channels at 4x4 to 48x48, while from 32 channels on Winograd is as fast or faster
(benchmarks/results/ncnn.md). The weights keep ncnn2table's 6-bit scales, so the table stays
valid for ncnn2int8 with Winograd.
"""

from __future__ import annotations

import numpy as np

from .fuse import requantize_targets
from .param import TAG_INT8, Layer, Param, Segment, read_floats
from .table import NcnnTable


def weight_scales(layer: Layer, weights: np.ndarray) -> np.ndarray:
    """ncnn2table's per-channel (per-group) weight scales of `layer`."""
    if layer.type == "ConvolutionDepthWise":
        rows = int(layer.get(7, 1))
    else:
        rows = int(layer.get(0))
    absmax = np.abs(weights.reshape(rows, -1)).max(axis=1)
    levels = 127.0
    if (
        layer.type == "Convolution"
        and int(layer.get(1)) == 3
        and int(layer.get(11, layer.get(1))) == 3
        and int(layer.get(2, 1)) == 1
        and int(layer.get(12, layer.get(2, 1))) == 1
        and int(layer.get(3, 1)) == 1
        and int(layer.get(13, layer.get(3, 1))) == 1
    ):
        levels = 31.0
    with np.errstate(divide="ignore", over="ignore"):
        scales = np.float32(levels) / absmax.astype(np.float32)
    # a zero channel, or one so small (denormal) that the scale overflows float32: any scale
    # gives all-zero int8 weights; 1 keeps the table finite (ncnn2table would write inf)
    return np.where(np.isfinite(scales) & (absmax > 0), scales, 1.0).astype(np.float32)


def quantize_weights(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """ncnn's float2int8 per row: round half away from zero, clamp to [-127, 127]."""
    rows = scales.shape[0]
    w = weights.reshape(rows, -1).astype(np.float32) * scales.astype(np.float32)[:, None]
    q = np.trunc(w + np.copysign(np.float32(0.5), w))
    return np.clip(q, -127, 127).astype(np.int8).reshape(-1)


def gemm_int8_layers(param: Param) -> set[str]:
    """Gemm layers ncnn runs in INT8 without a table (ncnn2int8's `quantize_gemm`): constant
    weights B stored transposed (`3=1`), A the activation, which ncnn quantizes per row at run
    time. Other Gemm forms are left FP32."""
    return {
        layer.name
        for layer in param.layers
        if layer.type == "Gemm"
        and int(layer.get(5)) == 1
        and int(layer.get(4)) == 0
        and int(layer.get(3)) == 1
        and int(layer.get(18)) == 0
        and len(layer.bottoms) == 1
    }


NARROW_WINOGRAD_CHANNELS = 16


def narrow_winograd(layer: Layer) -> bool:
    """An INT8 Convolution ncnn would run as Winograd F(4,3) though it reads few channels:
    3x3, stride 1, dilation 1, more than 8 inputs or outputs (ncnn's `prefer_winograd`), at most
    NARROW_WINOGRAD_CHANNELS inputs."""
    if layer.type != "Convolution" or layer.get(19, 0):
        return False
    g = layer.get
    kw, kh = int(g(1)), int(g(11, g(1)))
    dw, dh = int(g(2, 1)), int(g(12, g(2, 1)))
    sw, sh = int(g(3, 1)), int(g(13, g(3, 1)))
    out = int(g(0))
    inputs = int(g(6)) // max(out * kw * kh, 1)
    return (
        (kw, kh, dw, dh, sw, sh) == (3, 3, 1, 1, 1, 1)
        and (inputs > 8 or out > 8)
        and inputs <= NARROW_WINOGRAD_CHANNELS
    )


IMAGE_CHANNELS = 3


def reads_image(layer: Layer) -> bool:
    """A Convolution reading at most IMAGE_CHANNELS channels (a network's first layer on an
    image): on x86 its INT8 form is not faster (benchmarks/results/ncnn.md)."""
    if layer.type != "Convolution" or layer.get(19, 0):
        return False
    out, kw = int(layer.get(0)), int(layer.get(1))
    kh = int(layer.get(11, kw))
    return int(layer.get(6)) // max(out * kw * kh, 1) <= IMAGE_CHANNELS


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def write_int8(
    param: Param,
    bin_bytes: bytes,
    segments: dict[str, list[Segment]],
    table: NcnnTable,
    *,
    requantize: bool = True,
    gemm: bool = False,
    narrow_winograd_off: bool = False,
) -> tuple[str, bytes, list[str]]:
    """(param text, bin bytes, quantized layer names) of the INT8 model for `table`."""
    gemms = gemm_int8_layers(param) if gemm else set()
    int8 = {
        layer.name: float(table.inputs[layer.name])
        for layer in param.layers
        if layer.name in table.inputs and layer.name in table.weights and segments[layer.name]
    }
    top_scales = requantize_targets(param, int8) if requantize else {}
    layers = []
    chunks: list[bytes] = []
    quantized = []
    for layer in param.layers:
        segs = segments[layer.name]
        copy = Layer(
            layer.type, layer.name, list(layer.bottoms), list(layer.tops), list(layer.params)
        )
        if layer.name in int8:
            scales = np.asarray(table.weights[layer.name], dtype=np.float32)
            weights = read_floats(bin_bytes, segs[0])
            q = quantize_weights(weights, scales)
            chunks.append(np.uint32(TAG_INT8).tobytes() + _pad4(q.tobytes()))
            for seg in segs[1:]:  # the bias, unchanged
                chunks.append(bin_bytes[seg.offset : seg.offset + seg.nbytes])
            chunks.append(scales.astype("<f4").tobytes())
            chunks.append(np.float32(table.inputs[layer.name]).astype("<f4").tobytes())
            term = 1 if layer.type == "ConvolutionDepthWise" else 2
            if layer.name in top_scales:
                chunks.append(np.float32(top_scales[layer.name]).astype("<f4").tobytes())
                term += 100
            copy.set(8, term)
            if narrow_winograd_off and narrow_winograd(layer):
                copy.set(31, int(layer.get(31, 0)) | 64)
            quantized.append(layer.name)
        elif layer.name in gemms:
            weights = read_floats(bin_bytes, segs[0])
            absmax = float(np.abs(weights).max(initial=0.0))
            scale = np.float32(127.0 / absmax if absmax > 0 else 1.0)
            q = quantize_weights(weights, np.array([scale], np.float32))
            chunks.append(np.uint32(TAG_INT8).tobytes() + _pad4(q.tobytes()))
            for seg in segs[1:]:  # C, unchanged
                chunks.append(bin_bytes[seg.offset : seg.offset + seg.nbytes])
            chunks.append(scale.astype("<f4").tobytes())
            copy.set(18, 2)
        else:
            for seg in segs:
                chunks.append(bin_bytes[seg.offset : seg.offset + seg.nbytes])
        layers.append(copy)
    out = Param(layers, param.blob_count)
    return out.text(), b"".join(chunks), quantized
