"""End to end on PP-OCRv4 (rapidocr-onnxruntime's wheel) with real images.

The amax of every tensor is checked against the plain numpy reference run on activations
that this test collects itself with ONNX Runtime.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx2trt_lib.calib import reference
from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.cache import read_cache
from onnx2trt_lib.calib.dataset import open_source
from onnx2trt_lib.calib.preprocess import PRESETS
from onnx2trt_lib.errors import CalibrationError, UsageError

from .conftest import render_text

DET_SHAPE = {"x": (1, 3, 64, 64)}


def _independent_activations(model_path, batches):
    """Every float, non-constant tensor's values over all batches (the whole thing in memory)."""
    model = onnx.load(str(model_path))
    constant = {i.name for i in model.graph.initializer}
    outputs = []
    for node in model.graph.node:
        if node.op_type == "Constant" or all(i in constant for i in node.input if i):
            constant.update(node.output)
        else:
            outputs += [o for o in node.output if o]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    floats = [o.name for o in session.get_outputs() if o.type == "tensor(float)"]
    values = {n: [] for n in ["x", *floats]}
    for batch in batches:
        values["x"].append(batch["x"].ravel())
        for name, value in zip(floats, session.run(floats, batch), strict=True):
            values[name].append(value.ravel())
    return {n: np.concatenate(v) for n, v in values.items()}


def _image_list(image_dir, tmp_path, names):
    listing = tmp_path / "calib.txt"
    listing.write_text("\n".join(str(image_dir / n) for n in names) + "\n")
    return listing


def test_det_amax_equals_the_reference_for_every_tensor(det_model, image_dir, tmp_path):
    listing = _image_list(
        image_dir, tmp_path, ["sklearn_0.jpg", "astronaut_cmyk.jpg", "camera_gray.png", "text.png"]
    )
    out, ranges = tmp_path / "det.cache", tmp_path / "det.ranges.json"
    bins = 512  # the reference KL search is slow python; 512 bins keeps it to seconds
    # the same ORT graph optimization as the independent session below, so activations are bit-equal
    result = calibrate(
        det_model,
        listing,
        shapes="x:2x3x64x64",
        preprocess="paddleocr",
        output=out,
        ranges_path=ranges,
        num_bins=bins,
        ort_optimization="basic",
    )
    assert result.mode == "two-pass" and result.num_batches == 2 and result.num_samples == 4

    batches = list(
        open_source(listing, preprocess=PRESETS["paddleocr"]).batches({"x": (2, 3, 64, 64)})
    )
    values = _independent_activations(det_model, batches)
    assert set(result.amax) == set(values)  # every quantizable tensor, nothing else
    cache = read_cache(out)
    assert set(cache.bits) == set(values) and len(values) > 300
    for name, x in values.items():
        a = np.abs(x[np.isfinite(x)])
        width = 2.0 ** math.ceil(math.log2(float(a.max()))) / bins  # the power-of-two range
        hist = reference.histogram(x, width, bins)
        expected, _, _ = reference.entropy_threshold(hist, width)
        assert result.amax[name] == pytest.approx(expected, rel=1e-12, abs=0), name
        scale = cache.scales[name]
        assert math.isfinite(scale) and scale > 0
        assert np.float32(scale) == np.float32(expected / 127.0), name

    again = calibrate(
        det_model,
        listing,
        shapes="x:2x3x64x64",
        preprocess="paddleocr",
        output=out,
        ranges_path=ranges,
        num_bins=bins,
        ort_optimization="basic",
    )
    assert again.cache_hit and again.num_batches == 0

    # the default (ORT_ENABLE_ALL: fused, re-laid-out kernels) sees the same activations up to float
    # rounding (compared on max |x|: the KL argmin itself may move a bin on a flat curve)
    fused = calibrate(
        det_model, listing, shapes="x:2x3x64x64", preprocess="paddleocr", num_bins=bins
    )
    assert set(fused.amax) == set(values)
    for name, hist in fused.state.histograms.items():
        assert hist.amax_seen == pytest.approx(float(np.abs(values[name]).max()), rel=1e-4), name


def test_rec_model_on_rendered_words(rec_model, tmp_path):
    folder = tmp_path / "words"
    folder.mkdir()
    for index, word in enumerate(
        ["TensorRT", "calibration", "entropy", "histogram", "onnx", "2048"]
    ):
        render_text(word, size=(120 + 10 * index, 32), seed=index).save(folder / f"w{index}.png")
    out = tmp_path / "rec.cache"
    result = calibrate(
        rec_model,
        folder,
        shapes="x:3x3x48x160",
        preprocess="paddleocr-rec",
        output=out,
        mode="single-pass",
    )
    cache = read_cache(out)
    assert result.num_batches == 2 and len(cache.bits) == len(result.amax) > 300
    assert all(math.isfinite(s) and s > 0 for s in cache.scales.values())
    assert cache.header == "TRT-100300-EntropyCalibration2" or cache.header.endswith(
        "-EntropyCalibration2"
    )


def test_bad_inputs_fail_before_anything_is_written(det_model, image_dir, tmp_path):
    out, ranges = tmp_path / "o.cache", tmp_path / "o.json"
    listing = _image_list(image_dir, tmp_path, ["sklearn_0.jpg"])
    with pytest.raises(UsageError, match=r"dynamic shape .*--shape x:1x3x640x640"):
        calibrate(det_model, listing, output=out, ranges_path=ranges)
    with pytest.raises(CalibrationError, match="wants 3 channels but preprocessing gives 1"):
        calibrate(
            det_model,
            listing,
            shapes=DET_SHAPE,
            preprocess={"color": "GRAY", "mean": [0], "std": [1]},
            output=out,
        )
    nan = np.zeros((1, 3, 64, 64), np.float32)
    nan[0, 1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(CalibrationError, match="tensor 'x' has NaN or Inf"):
        calibrate(det_model, tmp_path / "nan.npy", output=out, ranges_path=ranges)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(det_model, tmp_path / "empty.txt", shapes=DET_SHAPE, output=out)
    with pytest.raises(UsageError, match="method"):
        calibrate(det_model, listing, shapes=DET_SHAPE, output=out, method="kl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.txt", "empty.txt", "nan.npy"]
    # skipping NaN cannot help when it spreads through the whole network: the error names a tensor
    with pytest.raises(
        CalibrationError, match=r"tensor '.+': cannot compute an amax: all \d+ values were NaN/Inf"
    ):
        calibrate(det_model, tmp_path / "nan.npy", output=out, ignore_nonfinite=True)
    assert not out.exists()
