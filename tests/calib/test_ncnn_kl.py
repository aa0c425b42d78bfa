"""`ncnn-kl` against a plain port of ncnn2table's search (benchmarks/ports/ncnn_kl.py, written
from Tencent/ncnn's source): same threshold on random and real histograms.

The port runs 2048-bin searches in ~6 s each, so random histograms use fewer bins (the port's
bin count is a module constant; the algorithm does not depend on it) and only a few real
2048-bin ones run (marked slow).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnx2trt_lib.calib import Histogram
from onnx2trt_lib.calib.methods import ncnn_kl_threshold
from onnx2trt_lib.errors import CalibrationError, UsageError

PORT = Path(__file__).resolve().parents[2] / "benchmarks" / "ports" / "ncnn_kl.py"


def _load_port(bins: int):
    if not PORT.is_file():
        pytest.skip(f"{PORT} is absent")
    spec = importlib.util.spec_from_file_location(f"ncnn_kl_port_{bins}", PORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.NUM_HISTOGRAM_BINS = bins
    return module


@pytest.fixture(scope="module")
def port256():
    return _load_port(256)


@pytest.fixture(scope="module")
def port2048():
    return _load_port(2048)


def _agree(port, hist, absmax):
    """Same t as the port; a different t only where both KLs tie to float32 rounding (the port
    sums in float32, we in float64), which the assertion message then shows."""
    n = hist.shape[0]
    _, t_port = port.quantize_kl_threshold(hist.astype(np.uint64), absmax)
    amax, t, curve = ncnn_kl_threshold(hist, absmax / n)
    assert amax == pytest.approx((t + 0.5) * absmax / n)
    assert t == t_port, (t, t_port, curve[t], curve[t_port])


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["normal", "laplace", "relu", "outliers", "sparse", "uniform"]),
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(50, 20_000),
)
def test_random_histograms_match_port(port256, kind, seed, size):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.standard_normal(size)
    elif kind == "laplace":
        x = rng.laplace(size=size)
    elif kind == "relu":
        x = np.maximum(rng.standard_normal(size), 0)  # half exact zeros: ncnn skips them
    elif kind == "outliers":
        x = rng.standard_normal(size)
        x[: max(1, size // 1000)] *= 50
    elif kind == "sparse":
        x = np.where(rng.random(size) < 0.05, rng.exponential(size=size), 0.0)
    else:
        x = rng.uniform(-1, 1, size)
    x = x.astype(np.float32)
    if not np.any(x):
        x[0] = 1
    hist, absmax = port256.ncnn_histogram(x)
    _agree(port256, hist.astype(np.int64), absmax)


@pytest.mark.parametrize("bins", [129, 200, 384])
def test_odd_bin_counts_match_port(bins):
    port = _load_port(bins)
    rng = np.random.default_rng(bins)
    x = rng.laplace(size=5000).astype(np.float32)
    hist, absmax = port.ncnn_histogram(x)
    _agree(port, hist.astype(np.int64), absmax)


def _real_activations() -> dict[str, np.ndarray]:
    """Activations of the bundled digits model on its calibration digits (ONNX Runtime)."""
    import onnx
    import onnxruntime as ort

    import onnx2trt_lib

    sample = Path(onnx2trt_lib.__file__).parent / "data" / "sample"
    model = onnx.load(sample / "digits.onnx")
    names = [n.output[0] for n in model.graph.node if n.op_type in ("Relu", "Resize", "Flatten")]
    for name in names:
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.load(sample / "digits_test.npz")
    x = x[x.files[0]].astype(np.float32)
    outs = sess.run(names, {sess.get_inputs()[0].name: x})
    return dict(zip(names, outs, strict=True))


@pytest.mark.slow
def test_real_histograms_match_port(port2048):
    """Our two-pass histogram (zeros counted) equals ncnn's histogram of the same values, and
    ncnn-kl equals the port's threshold on it, for every ReLU/Resize/Flatten activation."""
    for name, values in list(_real_activations().items())[:2]:
        h = Histogram(2048, range_max=float(np.abs(values).max()), count_zeros=True)
        h.update(values)
        hist, absmax = port2048.ncnn_histogram(values)
        ours = h.counts.copy()
        ours[0] -= h.zeros
        # bin edges: ncnn divides in float32, we multiply in float64; a value may sit one bin over
        assert np.abs(ours - hist.astype(np.int64)).sum() <= max(2, h.count // 10_000), name
        _agree(port2048, hist.astype(np.int64), absmax)
        # and on our own histogram of those values, the same threshold within a bin or two
        t_port = port2048.quantize_kl_threshold(hist, absmax)[1]
        assert abs(h.compute_amax("ncnn-kl") / h.bin_width - 0.5 - t_port) <= 2, name


def test_zeros_are_left_out():
    """Zeros change TensorRT's entropy but not ncnn-kl (ncnn never bins them)."""
    rng = np.random.default_rng(1)
    x = np.abs(rng.laplace(size=20_000)).astype(np.float32)
    a = Histogram(512, range_max=float(x.max()), count_zeros=True)
    a.update(x)
    b = Histogram(512, range_max=float(x.max()), count_zeros=True)
    b.update(np.concatenate([x, np.zeros(200_000, np.float32)]))
    assert b.zeros == 200_000 and a.zeros == 0
    assert a.compute_amax("ncnn-kl") == b.compute_amax("ncnn-kl")
    assert a.compute_amax("entropy") != b.compute_amax("entropy")


def test_zero_counts_survive_state_and_merge():
    rng = np.random.default_rng(2)
    a = Histogram(256, range_max=8.0, count_zeros=True)
    a.update(np.maximum(rng.standard_normal(1000), 0))
    b = Histogram(256, range_max=8.0, count_zeros=True)
    b.update(np.maximum(rng.standard_normal(1000), 0) * 3)
    m = a.merge(b)
    assert m.zeros == a.zeros + b.zeros
    assert Histogram.from_state(m.state_dict()) == m
    plain = Histogram(256)
    plain.update(np.ones(4))
    assert "zeros" not in plain.state_dict() and a.merge(plain).zeros is None


def test_without_zero_counts_is_an_error():
    h = Histogram(256)
    h.update(np.linspace(0, 1, 1000))
    with pytest.raises(CalibrationError, match="did not count"):
        h.compute_amax("ncnn-kl")
    z = Histogram(256, count_zeros=True)
    z.update(np.linspace(0, 1, 1000))
    with pytest.raises(UsageError, match="unsigned"):
        z.compute_amax("ncnn-kl", unsigned=True)
    bad = z.state_dict() | {"zeros": 10**6}
    with pytest.raises(CalibrationError, match="zeros"):
        Histogram.from_state(bad)


def test_edge_cases():
    assert ncnn_kl_threshold(np.zeros(2048), 1.0)[1] == 128  # ncnn: 0/0, first candidate kept
    assert ncnn_kl_threshold(np.ones(100), 1.0)[1] == 100  # fewer bins than groups: whole range
    h = Histogram(2048, count_zeros=True)
    h.update(np.zeros(10))
    assert h.compute_amax("ncnn-kl") == 1.0  # all zero: ZERO_AMAX like every method
