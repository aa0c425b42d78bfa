"""plot_histogram / plot_kl: the figure holds what it claims (bars, threshold line, KL curve)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from onnx2trt_lib.calib import Histogram, entropy_threshold
from onnx2trt_lib.errors import MissingDependencyError, UsageError
from onnx2trt_lib.plots import kl_thresholds, plot_histogram, plot_kl


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _laplace_hist(num_bins: int = 2048, seed: int = 0) -> Histogram:
    rng = np.random.default_rng(seed)
    h = Histogram(num_bins)
    h.update(rng.laplace(scale=1.0, size=50_000).astype(np.float32))
    return h


def _vlines(ax) -> list[float]:
    """x of every vertical line (two equal x values) drawn on `ax`."""
    xs = []
    for line in ax.lines:
        x = np.asarray(line.get_xdata(), dtype=float)
        if x.size == 2 and x[0] == x[1]:
            xs.append(float(x[0]))
    return xs


@pytest.mark.parametrize("num_bins", [2048, 300])
def test_histogram_bars_threshold_and_kl(num_bins: int) -> None:
    h = _laplace_hist(num_bins)
    amax, m, curve = entropy_threshold(h.counts, h.bin_width)
    fig = plot_histogram(h, amax=amax, kl_curve=curve, title="laplace")
    ax = fig.axes[0]
    # one bar per bin, each at its bin's left edge with the bin's count
    assert len(ax.patches) == num_bins
    assert np.allclose([p.get_x() for p in ax.patches], h.bin_edges[:-1])
    assert np.array_equal([p.get_height() for p in ax.patches], h.counts)
    assert _vlines(ax) == [pytest.approx(amax)]
    assert ax.get_title() == "laplace"
    # KL curve on the twin axis: x = threshold of each candidate, minimum at the chosen amax
    twin = fig.axes[1]
    (kl_line,) = twin.lines
    x, y = np.asarray(kl_line.get_xdata()), np.asarray(kl_line.get_ydata())
    finite = np.isfinite(curve)
    assert np.array_equal(y, curve[finite])
    assert x[0] == pytest.approx((np.flatnonzero(finite)[0] + 0.5) * h.bin_width)
    assert x[0] >= 128.5 * h.bin_width  # no candidate below 128 bins
    best = np.flatnonzero(y <= y.min() + 1e-12)[-1]
    assert x[best] == pytest.approx(amax)
    assert m == np.flatnonzero(finite)[best]


def test_histogram_without_extras_has_only_bars() -> None:
    h = _laplace_hist(512)
    fig = plot_histogram(h, log=False)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 512 and _vlines(ax) == []
    assert ax.get_yscale() == "linear"
    assert ax.get_xlim() == pytest.approx((0.0, h.range_max))


def test_plot_kl_positions_and_chosen_line() -> None:
    h = _laplace_hist()
    amax, m, curve = entropy_threshold(h.counts, h.bin_width)
    fig = plot_kl(curve, h.bin_width, chosen=amax)
    ax = fig.axes[0]
    curves = [ln for ln in ax.lines if len(ln.get_xdata()) > 2]
    assert len(curves) == 1
    x = np.asarray(curves[0].get_xdata())
    assert np.allclose(x, kl_thresholds(curve, h.bin_width)[np.isfinite(curve)])
    assert _vlines(ax) == [pytest.approx(amax)]
    assert x[np.argmin(curves[0].get_ydata())] == pytest.approx((m + 0.5) * h.bin_width)


def test_plot_kl_leaves_out_nan_and_infinite_values() -> None:
    curve = np.array([np.nan, np.nan, np.inf, 3.0, 1.0, np.inf, 2.0])
    fig = plot_kl(curve, 0.5)
    (line,) = fig.axes[0].lines
    assert list(line.get_xdata()) == [1.75, 2.25, 3.25]
    assert list(line.get_ydata()) == [3.0, 1.0, 2.0]


def test_draws_into_given_axes(tmp_path) -> None:
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1)
    h = _laplace_hist(256)
    amax, _, curve = entropy_threshold(h.counts, h.bin_width)
    assert plot_histogram(h, amax=amax, ax=a1) is fig
    assert plot_kl(curve, h.bin_width, chosen=amax, ax=a2) is fig
    assert len(a1.patches) == 256 and len(a2.lines) == 2
    out = tmp_path / "both.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="needs an onnx2trt_lib.calib.Histogram"):
        plot_histogram(np.ones(10))
    empty = Histogram(128)
    empty.update(np.zeros(10, np.float32))
    with pytest.raises(UsageError, match="nothing to draw"):
        plot_histogram(empty)
    with pytest.raises(UsageError, match="kl_curve has shape"):
        plot_histogram(_laplace_hist(128), kl_curve=np.ones(128))
    with pytest.raises(UsageError, match="bin_width must be a positive"):
        plot_kl(np.ones(4), 0.0)
    with pytest.raises(UsageError, match="must be 1-D"):
        plot_kl(np.ones((2, 2)), 1.0)


def test_missing_matplotlib_names_the_extra(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"onnx2trt_lib\[plots\]"):
        plot_kl(np.ones(4), 1.0)
