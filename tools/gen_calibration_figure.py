"""Draw docs/images/calibration_*.png from a real activation of the bundled sample model.

    python tools/gen_calibration_figure.py [--tensor NAME] [--out docs/images]

The activation is collected with ONNX Runtime directly (the tensor is exposed as an extra
graph output) on the 64 bundled calibration images, decoded with Pillow and scaled to
[0, 1] as the sample's preprocess.json says. The |x| histogram is onnx2trt_lib's
`Histogram` (2048 bins over [0, R], R the power of two at or above max|x|, as `calibrate`'s
exact mode bins), the threshold `entropy_threshold`'s. For
docs/calibration.md it also prints the KL search of the common misreading of the steps
(Q built from P after the outliers were folded in), which always picks candidate 128.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import onnx

from onnx2trt_lib import _optional
from onnx2trt_lib._io import write_bytes_atomic
from onnx2trt_lib.calib import Histogram, entropy_threshold
from onnx2trt_lib.calib.histogram import pow2_ceil
from onnx2trt_lib.plots import plot_histogram, plot_kl

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "onnx2trt_lib" / "data" / "sample"
DEFAULT_TENSOR = "/Relu_1_output_0"  # conv2 + ReLU: a long right tail that the threshold cuts


def sample_images() -> np.ndarray:
    """The bundled calibration images as one float32 NCHW batch in [0, 1]."""
    pil_image = _optional.require("PIL.Image", purpose="decoding the sample images")
    paths = [
        SAMPLE / line.strip()
        for line in (SAMPLE / "calib_list.txt").read_text().splitlines()
        if line.strip()
    ]
    pixels = [np.asarray(pil_image.open(p).convert("L"), dtype=np.float32) / 255.0 for p in paths]
    return np.stack(pixels)[:, None, :, :]


def activation(tensor: str, images: np.ndarray) -> np.ndarray:
    """Values of `tensor` over `images`, run with ONNX Runtime on CPU."""
    ort = _optional.onnxruntime()
    model = onnx.load(str(SAMPLE / "digits.onnx"))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [session.run([tensor], {"image": images[i : i + 1]})[0] for i in range(len(images))]
    )


def misread_kl(counts: np.ndarray, i: int, nq: int = 128) -> float:
    """KL at candidate i when Q is built from P *after* the outliers were added to P[i-1]."""
    h = counts.astype(np.float64)
    p = h[:i].copy()
    p[i - 1] += h[i:].sum()
    group = (np.arange(i) * nq) // i
    totals = np.bincount(group, weights=p, minlength=nq)
    nonzero = np.bincount(group, weights=(p > 0).astype(np.float64), minlength=nq)
    q = np.where(p > 0, totals[group] / np.maximum(nonzero[group], 1), 0.0)
    p, q = p / p.sum(), q / q.sum()
    pos = p > 0
    if np.any(q[pos] == 0):
        return float("inf")
    return float(np.sum(p[pos] * np.log(p[pos] / q[pos])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensor", default=DEFAULT_TENSOR)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()

    values = activation(args.tensor, sample_images())
    hist = Histogram(2048, range_max=pow2_ceil(float(np.abs(values).max())))
    hist.update(values)
    amax, m, curve = entropy_threshold(hist.counts, hist.bin_width)
    literal = np.array([misread_kl(hist.counts, i) for i in range(128, hist.num_bins + 1)])
    m_literal = 128 + int(np.flatnonzero(literal <= literal.min() + 1e-12)[-1])

    plt = _optional.pyplot()
    title = f"{args.tensor} of digits.onnx, {values.size} values from {len(values)} images"
    fig = plot_histogram(hist, amax=amax, kl_curve=curve, title=title)
    _save(fig, args.out / "calibration_histogram.png")
    fig = plot_kl(curve, hist.bin_width, chosen=amax)
    ax = fig.axes[0]
    x = (128 + np.arange(literal.size) + 0.5) * hist.bin_width  # literal[t] is candidate 128 + t
    ax.plot(
        x,
        literal,
        color="tab:gray",
        linewidth=1.0,
        label="misreading: Q from the clipped P",
    )
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(
        f"KL per candidate threshold: minimum at m = {m} bins; the misreading picks m = {m_literal}"
    )
    _save(fig, args.out / "calibration_kl.png")
    plt.close("all")

    print(
        f"tensor {args.tensor}: {values.size} values, max |x| = {hist.amax_seen:.6g}, bin width = {hist.bin_width:.6g}"
    )
    print(
        f"entropy: m = {m}, amax = (m + 0.5) * w = {amax:.6g}, scale = amax / 127 = {amax / 127:.6g}"
    )
    print(
        f"misreading (Q from the clipped P): m = {m_literal}, amax = {(m_literal + 0.5) * hist.bin_width:.6g}"
    )
    print(f"wrote {args.out / 'calibration_histogram.png'} and {args.out / 'calibration_kl.png'}")


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())


if __name__ == "__main__":
    main()
