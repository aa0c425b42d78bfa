"""Which ONNX tensor feeds each ncnn layer that ncnn quantizes.

pnnx renames everything (blobs become `0, 1, 2, ...`, layers `convrelu_0`) and fuses ops, so
names cannot be matched. Values can: one calibration sample is run through the FP32 ncnn model
and through ONNX Runtime with every float tensor exposed, and each quantized layer's input blob
is matched to the ONNX tensor holding the same values (same element count, equal within a
tolerance). Where layouts differ (a Reshape/Permute pnnx moved), the sorted values are matched:
calibration bins |x| and so depends only on the values, not on where they sit. A blob that no
ONNX tensor matches (a value pnnx computed that ONNX never materialises) is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import Onnx2TrtError
from .param import QUANTIZED_TYPES, Param
from .runtime import load_net, run

log = logging.getLogger(__name__)

# |ncnn - onnx| <= RTOL * max|onnx| + ATOL: FP32 ncnn and ONNX Runtime differ by summation order
RTOL = 2e-3
ATOL = 1e-6


class MappingError(Onnx2TrtError):
    """An ncnn layer whose input cannot be traced back to an ONNX tensor."""


@dataclass(frozen=True)
class LayerInput:
    layer: str  # ncnn layer name
    layer_type: str
    blob: str  # ncnn blob feeding it
    tensor: str  # ONNX tensor with the same values
    how: str  # "values" or "sorted values"


def ncnn_inputs(param: Param, onnx_inputs: Sequence[str]) -> dict[str, str]:
    """ncnn Input blob -> ONNX input name (pnnx keeps the graph order: in0, in1, ...)."""
    blobs = [layer.tops[0] for layer in param.layers if layer.type == "Input"]
    if len(blobs) != len(onnx_inputs):
        raise MappingError(
            f"the ncnn model has {len(blobs)} inputs but the ONNX model {len(onnx_inputs)}"
        )
    return dict(zip(blobs, onnx_inputs, strict=True))


def onnx_values(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float tensor of `model` (inputs included) on one batch, by ONNX Runtime."""
    from .. import _optional
    from ..calib.tensors import quantizable_tensors

    ort = _optional.onnxruntime()
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    names = [n for n in quantizable_tensors(model) if n not in feeds]
    have = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in have:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    outputs = [o.name for o in session.get_outputs()]
    values = dict(zip(outputs, session.run(outputs, dict(feeds)), strict=True))
    values.update(feeds)
    return {k: np.asarray(v) for k, v in values.items() if np.asarray(v).dtype.kind == "f"}


def _close(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b| (inf when they cannot be compared)."""
    if a.size != b.size:
        return np.inf
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    scale = max(float(np.abs(b).max(initial=0.0)), ATOL / RTOL)
    return float(np.abs(a - b).max(initial=0.0)) / scale


def map_layers(
    model: onnx.ModelProto,
    param: Param,
    param_path,
    bin_path,
    sample: Mapping[str, np.ndarray],
) -> list[LayerInput]:
    """LayerInput for every Convolution/ConvolutionDepthWise/InnerProduct of `param`.

    `sample`: ONNX input name -> array of batch 1.
    """
    inputs = ncnn_inputs(param, list(sample))
    layers = [layer for layer in param.layers if layer.type in QUANTIZED_TYPES]
    if not layers:
        return []
    net = load_net(param_path, bin_path)
    blobs = sorted({layer.bottoms[0] for layer in layers})
    ncnn_vals = run(net, {blob: sample[name][0] for blob, name in inputs.items()}, blobs)
    ref = onnx_values(model, sample)
    order = list(ref)  # graph inputs, then topological order of the exposed outputs
    sorted_ref: dict[str, np.ndarray] = {}
    found: list[LayerInput] = []
    for layer in layers:
        blob = layer.bottoms[0]
        if blob in inputs:
            found.append(LayerInput(layer.name, layer.type, blob, inputs[blob], "input"))
            continue
        got = ncnn_vals[blob]
        errors = {name: _close(got, ref[name]) for name in order if ref[name].size == got.size}
        best = min(errors, key=lambda n: (errors[n], order.index(n)), default=None)
        how = "values"
        if best is None or errors[best] > RTOL:
            flat = np.sort(got.ravel())
            for name in errors:
                if name not in sorted_ref:
                    sorted_ref[name] = np.sort(ref[name].ravel())
            errors = {name: _close(flat, sorted_ref[name]) for name in errors}
            best = min(errors, key=lambda n: (errors[n], order.index(n)), default=None)
            how = "sorted values"
        if best is None or errors[best] > RTOL:
            raise MappingError(
                f"ncnn layer {layer.name} ({layer.type}): its input blob {blob} matches no ONNX "
                "tensor (pnnx computed a value the ONNX model never holds); it cannot be calibrated"
            )
        log.debug("%s <- %s (%s, error %.2g)", layer.name, best, how, errors[best])
        found.append(LayerInput(layer.name, layer.type, blob, best, how))
    return found
