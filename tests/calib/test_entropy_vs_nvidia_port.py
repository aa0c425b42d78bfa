"""Cross-check with an independent implementation: NVIDIA's `_compute_amax_entropy` (ported in
benchmarks/ports). With bin 0 already equal to bin 1 (NVIDIA overwrites bin 0 that way) its
candidate loop is our spec, so it must pick the same m; its amax is the bin edge m * w."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from onnx2trt_lib.calib import entropy_threshold

pytest.importorskip("scipy")
PORT = Path(__file__).resolve().parents[2] / "benchmarks" / "ports" / "nvidia_entropy.py"


@pytest.fixture(scope="module")
def nvidia():
    if not PORT.is_file():
        pytest.skip(f"{PORT} is absent")
    spec = importlib.util.spec_from_file_location("nvidia_entropy_port", PORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", range(8))
def test_same_m_as_nvidia(nvidia, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 400))
    kind = seed % 4
    if kind == 0:
        x = np.abs(rng.standard_normal(50_000))
    elif kind == 1:
        x = np.abs(rng.laplace(size=50_000))
    elif kind == 2:
        x = np.maximum(rng.standard_t(3, 50_000), 0)
    else:
        x = np.abs(rng.standard_normal(50_000))
        x[:5] *= 30
    hist, edges = np.histogram(x, bins=n, range=(0, x.max()))
    hist[0] = hist[1]
    width = x.max() / n
    _, m, _ = entropy_threshold(hist, width)
    assert nvidia.compute_amax_entropy(hist, edges) == pytest.approx(edges[m], rel=1e-12)
