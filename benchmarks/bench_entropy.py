"""INT8 entropy engine: thresholds vs public implementations, and speed. Run by hand:

    python benchmarks/bench_entropy.py [--samples 1000000] [--big 100000000] [--out benchmarks/results/entropy.md]

Prints a markdown report (and writes it with --out): the machine and its load, numba
compile / cache-load time, a threshold table (ours vs ports of NVIDIA ModelOpt /
pytorch-quantization, MXNet, ncnn, and onnxruntime's own get_entropy_threshold) on six
distributions, KL-search speed per 2048-bin tensor, and histogram accumulation speed.
Ports live in benchmarks/ports/ (reference code, not the library).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ports import mxnet_entropy, ncnn_kl, nvidia_entropy  # noqa: E402

from onnx2trt_lib._io import write_text_atomic  # noqa: E402
from onnx2trt_lib.calib import Histogram, abs_max, entropy_threshold  # noqa: E402
from onnx2trt_lib.calib import histogram as calib_hist_mod  # noqa: E402

N_BINS = 2048


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return f"loadavg {os.getloadavg()}"


def distributions(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    gauss = rng.standard_normal(n).astype(np.float32)
    outl = gauss.copy()
    outl[rng.integers(0, n, 10)] = rng.choice([-1.0, 1.0], 10) * 1000.0
    return {
        "gaussian N(0,1)": gauss,
        "laplace(0,1)": rng.laplace(size=n).astype(np.float32),
        "relu(student-t 3) long tail": np.maximum(rng.standard_t(3, n), 0).astype(np.float32),
        "gaussian + 10 outliers at 1000": outl,
        "all zero": np.zeros(n, np.float32),
        "constant 0.5": np.full(n, 0.5, np.float32),
    }


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def run_times(fn, repeat: int) -> np.ndarray:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return np.array(ts)


def ort_threshold(x: np.ndarray, num_bins: int, num_quantized_bins: int) -> float:
    """onnxruntime's own HistogramCollector.collect_value + get_entropy_threshold (installed package)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(
        method="entropy",
        symmetric=True,
        num_bins=num_bins,
        num_quantized_bins=num_quantized_bins,
        percentile=99.999,
        scenario="same",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        collector.collect({"x": x})
        lo, hi = collector.get_entropy_threshold(collector.histogram_dict["x"], num_quantized_bins)
    return float(max(abs(float(lo)), abs(float(hi))))


def safe(fn, *args):
    try:
        value, seconds = timed(fn, *args)
        return f"{value:.5g}", seconds
    except Exception as exc:  # the ports are allowed to fail on degenerate data: say how
        return f"error: {type(exc).__name__}: {str(exc)[:60]}", None


def threshold_table(data: dict[str, np.ndarray]) -> tuple[str, dict[str, dict[str, float | None]]]:
    rows = []
    times: dict[str, dict[str, float | None]] = {}
    head = (
        "| distribution | max abs | ours entropy | (m) | ours, bin 0 := bin 1 | ours mse | ours p99.99 |"
        " NVIDIA ModelOpt port | MXNet port | ncnn port | ORT default (128/128) | ORT 4096 bins/256 |"
    )
    rows.append(head)
    rows.append("|" + "---|" * (head.count("|") - 1))
    for name, x in data.items():
        h = Histogram(N_BINS)
        h.update(x)
        ours = h.compute_amax("entropy")
        m = "-" if h.bin_width == 0 else str(entropy_threshold(h.counts, h.bin_width)[1])
        # NVIDIA's zero-bin trick applied to our search, to show where that difference comes from
        c0 = h.counts.copy()
        c0[0] = c0[1]
        z = (
            f"{entropy_threshold(c0, h.bin_width)[0]:.5g}"
            if h.bin_width > 0 and c0.sum() > 0
            else "-"
        )
        row_t: dict[str, float | None] = {}
        # NVIDIA on exactly our histogram: counts and edges k * w
        nv, row_t["nvidia"] = safe(nvidia_entropy.compute_amax_entropy, h.counts, h.bin_edges)
        mx, row_t["mxnet"] = safe(
            lambda a: mxnet_entropy.get_optimal_threshold(
                mxnet_entropy.mxnet_histogram(a, 2 * N_BINS + 1), 255
            )[3],
            x,
        )
        nc, row_t["ncnn"] = safe(
            lambda a: ncnn_kl.quantize_kl_threshold(*ncnn_kl.ncnn_histogram(a))[0], x
        )
        od, row_t["ort_default"] = safe(ort_threshold, x, 128, 128)
        om, row_t["ort_2048"] = safe(ort_threshold, x, 2 * N_BINS, 256)
        times[name] = row_t
        rows.append(
            f"| {name} | {abs_max(x):.5g} | {ours:.5g} | {m} | {z} | {h.compute_amax('mse'):.5g} | "
            f"{h.compute_amax('percentile'):.5g} | {nv} | {mx} | {nc} | {od} | {om} |"
        )
    return "\n".join(rows), times


def compile_times() -> str:
    """First-call time in fresh processes: empty numba cache (compile) vs warm cache (load)."""
    code = textwrap.dedent(
        """
        import time, numpy as np
        t0 = time.perf_counter()
        from onnx2trt_lib.calib import Histogram, entropy_threshold
        t1 = time.perf_counter()
        h = Histogram(2048); h.update(np.random.default_rng(0).standard_normal(1000).astype(np.float32))
        t2 = time.perf_counter()
        entropy_threshold(h.counts, h.bin_width)
        t3 = time.perf_counter()
        print(f"{t1-t0:.3f} {t2-t1:.3f} {t3-t2:.3f}")
        """
    )
    lines = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("empty cache (compile)", "warm cache (load)"):
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            )
            imp, hist, kl = out.stdout.split()
            lines.append(f"| {label} | {imp} | {hist} | {kl} |")
    return (
        "| first call in a fresh process | import calib (s) | first Histogram.update float32 (s) | first entropy_threshold (s) |\n|---|---|---|---|\n"
        + "\n".join(lines)
    )


def kl_speed(x: np.ndarray, times: dict[str, float | None]) -> str:
    h = Histogram(N_BINS)
    h.update(x)
    entropy_threshold(h.counts, h.bin_width)
    all_t = run_times(lambda: entropy_threshold(h.counts, h.bin_width), 300)
    ours, best = float(np.median(all_t)), float(all_t.min())
    cpu = []
    for _ in range(300):  # CPU time of this thread: what the search costs, whatever the load
        c = time.thread_time()
        entropy_threshold(h.counts, h.bin_width)
        cpu.append(time.thread_time() - c)
    cpu_med = float(np.median(cpu))
    # many tensors at once: Python threads, nogil kernels
    hists = [h.counts.copy() for _ in range(64)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        t = time.perf_counter()
        list(pool.map(lambda c: entropy_threshold(c, h.bin_width), hists))
        two = (time.perf_counter() - t) / len(hists)
    rows = [
        "| KL search, one 2048-bin tensor (gaussian) | seconds | vs ours |",
        "|---|---|---|",
        f"| ours (numba, 1 core, median of 300; fastest {best * 1e3:.3f} ms) | {ours * 1e3:.3f} ms | 1x |",
        f"| ours, CPU time of the calling thread (median of 300) | {cpu_med * 1e3:.3f} ms | - |",
        f"| ours, 64 tensors over 2 Python threads (wall time / 64) | {two * 1e3:.3f} ms | throughput {ours / two:.2f}x of serial |",
    ]
    for key, label in [
        ("nvidia", "NVIDIA ModelOpt port (numpy/scipy, one run)"),
        ("mxnet", "MXNet port, 4097 signed bins (one run)"),
        ("ncnn", "ncnn port, numpy float32 (one run)"),
        (
            "ort_2048",
            "onnxruntime get_entropy_threshold, 4096 bins/256 (one run, incl. its histogram)",
        ),
        ("ort_default", "onnxruntime defaults 128 bins/128 (one candidate)"),
    ]:
        s = times.get(key)
        if s is not None:
            rows.append(f"| {label} | {s:.3f} s | {s / ours:,.0f}x slower |")
    return "\n".join(rows)


def hist_speed(n_big: int) -> str:
    rng = np.random.default_rng(1)
    big = rng.standard_normal(n_big, dtype=np.float32)
    rows = [
        f"| {n_big // 10**6}M float32 N(0,1) | threads | median of 5 (s) | G elements/s (median) | G elements/s (best) |"
        " G elements per CPU-second (median) |",
        "|---|---|---|---|---|---|",
    ]

    def row(label: str, threads: int, fn, n: int = n_big) -> None:
        # wall time says what this run got; process CPU time (all threads) says how much work the
        # code needs per element, which is what a busy shared machine does not distort as much
        walls, cpus = [], []
        for _ in range(5):
            c, t = time.process_time(), time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        med, best, cpu = float(np.median(walls)), float(min(walls)), float(np.median(cpus))
        rows.append(
            f"| {label} | {threads} | {med:.3f} | {n / med / 1e9:.2f} | {n / best / 1e9:.2f} | "
            f"{n / cpu / 1e9:.2f} |"
        )

    row("np.sum (memory-read bound)", 1, lambda: big.sum())
    for threads in (1, 2):
        os.environ["ONNX2TRT_CALIB_THREADS"] = str(threads)
        calib_hist_mod._POOL = None  # rebuild the pool with this many workers
        row("ours abs_max (pass 1 of exact mode)", threads, lambda: abs_max(big))
        r = abs_max(big)
        row(
            "ours Histogram(range_max=...).update (pass 2)",
            threads,
            lambda r=r: Histogram(N_BINS, range_max=r).update(big),
        )
        row(
            "ours Histogram().update, first batch (abs_max + bin)",
            threads,
            lambda: Histogram(N_BINS).update(big),
        )
    os.environ.pop("ONNX2TRT_CALIB_THREADS", None)
    calib_hist_mod._POOL = None
    sub = big[: n_big // 10]
    t = run_times(lambda: np.histogram(np.abs(sub), bins=N_BINS, range=(0, float(r))), 1)[0]
    rows.append(
        f"| np.histogram(np.abs(x), 2048, range), on {sub.size / 1e6:g}M, one run | 1 | {t:.3f} | "
        f"{sub.size / t / 1e9:.2f} | - | - |"
    )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--big", type=int, default=100_000_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    parts = [
        f"# INT8 entropy engine: benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
    ]
    parts.append(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}."
    )
    parts.append(f"Load at start: `{uptime()}`")
    parts += ["", "## numba compile vs cache load", "", compile_times(), ""]
    data = distributions(args.samples)
    table, times = threshold_table(data)
    parts += [
        "## Thresholds (amax) on the same data",
        "",
        f"{args.samples:,} float32 samples each; {N_BINS} bins per side.",
        "",
        table,
        "",
    ]
    parts += [
        "## KL search speed",
        "",
        kl_speed(data["gaussian N(0,1)"], times["gaussian N(0,1)"]),
        "",
    ]
    parts += ["## Histogram accumulation", "", hist_speed(args.big), ""]
    parts.append(f"Load at end: `{uptime()}`")
    text = "\n".join(parts) + "\n"
    print(text)
    if args.out:
        write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
