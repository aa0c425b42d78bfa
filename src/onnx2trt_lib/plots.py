"""Pictures of calibration: a tensor's |x| histogram with its INT8 threshold, and the KL curve.

Looking at the histogram is the quickest way to see why a tensor quantizes badly (a long
tail cut off, or a range wasted on a few outliers). matplotlib loads through
`onnx2trt_lib._optional` when a function is called (extra `plots`); each function draws
into `ax` when given, else into a new figure, and returns the Figure.

x axes are in the tensor's units: histogram bin k covers [k*w, (k+1)*w), and the KL value
of candidate i (bins 0..i-1 kept; `kl_curve[i]` as `entropy_threshold` returns it) is drawn
at its threshold (i + 0.5) * w, the amax that candidate would give, so the chosen threshold
sits at the KL curve's minimum. NaN entries (no candidate) and +inf are left out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import _optional
from .errors import UsageError


def _figure_and_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    plt = _optional.pyplot()
    fig, new_ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, new_ax


def kl_thresholds(kl_curve: Any, bin_width: float) -> np.ndarray:
    """The threshold (amax) of each KL-curve entry: kl_curve[i] is candidate i, amax (i + 0.5) * w."""
    n = len(np.asarray(kl_curve))
    return (np.arange(n) + 0.5) * float(bin_width)


def _check_width(bin_width: float, what: str) -> float:
    w = float(bin_width)
    if not (math.isfinite(w) and w > 0):
        raise UsageError(f"{what}: bin_width must be a positive number, got {bin_width!r}")
    return w


def _draw_kl(ax: Any, curve: np.ndarray, x: np.ndarray, *, color: str = "tab:red") -> Any:
    finite = np.isfinite(curve)
    (line,) = ax.plot(x[finite], curve[finite], color=color, linewidth=1.2, label="KL(P||Q)")
    ax.set_ylabel("KL divergence", color=color)
    ax.tick_params(axis="y", colors=color)
    return line


def plot_histogram(
    hist: Any,
    *,
    amax: float | None = None,
    kl_curve: Any = None,
    title: str | None = None,
    ax: Any = None,
    log: bool = True,
) -> Any:
    """Bar chart of a `Histogram`'s |x| counts, with the chosen threshold and optionally the KL curve.

    One bar per bin (log count axis by default, since activations are heavy-tailed);
    `amax` draws a dashed vertical line; `kl_curve` (from `entropy_threshold` on this
    histogram) is drawn against a second y axis at each candidate's threshold.
    """
    from .calib.histogram import Histogram

    if not isinstance(hist, Histogram):
        raise UsageError(
            f"plot_histogram needs an onnx2trt_lib.calib.Histogram, got {type(hist).__name__}"
        )
    if hist.range_max <= 0:
        raise UsageError(
            f"plot_histogram: the histogram has no range ({hist.count} values, all zero or none): nothing to draw"
        )
    w = _check_width(hist.bin_width, "plot_histogram")
    fig, ax = _figure_and_axes(ax, (8.0, 4.0))
    counts = np.asarray(hist.counts)
    bars = ax.bar(
        hist.bin_edges[:-1],
        counts,
        width=w,
        align="edge",
        color="tab:blue",
        linewidth=0,
        label="|x| count",
    )
    if log:
        ax.set_yscale("log")
    ax.set_xlim(0.0, hist.range_max)
    ax.set_xlabel("|x|")
    ax.set_ylabel("count")
    handles = [bars]
    if amax is not None:
        amax = float(amax)
        line = ax.axvline(
            amax, color="black", linestyle="--", linewidth=1.2, label=f"threshold amax = {amax:.4g}"
        )
        handles.append(line)
    if kl_curve is not None:
        curve = np.asarray(kl_curve, dtype=np.float64)
        if curve.shape != (hist.num_bins + 1,):
            raise UsageError(
                f"plot_histogram: kl_curve has shape {curve.shape}; expected ({hist.num_bins + 1},) "
                "(the curve entropy_threshold returned for this histogram)"
            )
        twin = ax.twinx()
        handles.append(_draw_kl(twin, curve, kl_thresholds(curve, w)))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_kl(
    kl_curve: Any,
    bin_width: float,
    *,
    chosen: float | None = None,
    ax: Any = None,
) -> Any:
    """The KL divergence of every candidate threshold, with the `chosen` amax marked.

    `kl_curve[i]` is candidate i's KL (entropy_threshold's curve: NaN below the first
    candidate) and is drawn at its threshold (i + 0.5) * bin_width. NaN and infinite
    values (Q = 0 where P > 0) are left out.
    """
    curve = np.asarray(kl_curve, dtype=np.float64)
    if curve.ndim != 1:
        raise UsageError(f"plot_kl: kl_curve must be 1-D, got shape {curve.shape}")
    w = _check_width(bin_width, "plot_kl")
    fig, ax = _figure_and_axes(ax, (8.0, 3.0))
    x = kl_thresholds(curve, w)
    _draw_kl(ax, curve, x)
    ax.set_xlabel("threshold amax (|x|)")
    if chosen is not None:
        chosen = float(chosen)
        ax.axvline(
            chosen,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"chosen amax = {chosen:.4g}",
        )
        ax.legend(loc="upper right", fontsize="small")
    if x.size:
        ax.set_xlim(0.0, x.size * w)
    return fig


def save_worst_histograms(
    state: Any, amax: dict[str, float], folder: str | Path, *, top: int = 8
) -> list[Path]:
    """PNG of the `top` most clipped tensors (largest observed max |x| / chosen amax), each with its
    histogram, chosen threshold and KL curve; for `onnx2trt calibrate --plots DIR`."""
    import re

    from ._io import atomic_write
    from .calib import entropy_threshold

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ranked = sorted(
        (
            name
            for name, hist in state.histograms.items()
            if name in amax and amax[name] > 0 and hist.count
        ),
        key=lambda name: state.histograms[name].amax_seen / amax[name],
        reverse=True,
    )
    written = []
    for rank, name in enumerate(ranked[:top], start=1):
        hist = state.histograms[name]
        kl_curve = None
        if hist.counts.any():
            _, _, kl_curve = entropy_threshold(hist.counts, hist.bin_width)
        ratio = hist.amax_seen / amax[name]
        fig = plot_histogram(
            hist,
            amax=amax[name],
            kl_curve=kl_curve,
            title=f"{name}: max |x| {hist.amax_seen:.4g}, amax {amax[name]:.4g} ({ratio:.1f}x clipped)",
        )
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80] or "tensor"
        path = folder / f"{rank:02d}_{safe}.png"
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=100)
        _optional.pyplot().close(fig)
        written.append(path)
    return written
