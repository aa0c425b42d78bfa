"""Calibration cost: `onnx2trt calibrate` vs plain FP32 ONNX Runtime inference vs onnxruntime's quantize_static(Entropy).

Same model (PP-OCRv4 rec from rapidocr-onnxruntime), same data (N words rendered with
Pillow, preprocessed once into an .npy), each measurement in a fresh subprocess so its peak
memory (VmHWM) is its own. Run by hand:

    python benchmarks/bench_calibrate.py --words 64 --batch-size 8 [--write benchmarks/results/calibrate.md]

The goal table in one command (each (words, cores) group is one run with its own FP32 and floor
rows; a core count N pins every child to the first N CPUs of this process's affinity mask, like
`taskset`; `--baseline-src` adds the same rows for another checkout's code, e.g. main's, so
before/after ratios come from the same run):

    python benchmarks/bench_calibrate.py --words 64,256 --cores 2,16 --ort-words 64 \
        [--baseline-src ../main/src] --summary benchmarks/results/calibrate_goals.md

Runs: `onnx2trt-<mode>-<scope>`, scope all = every activation (TensorRT <= 10 cache), qdq = the
inputs insert-qdq quantizes (TensorRT 11). `floor-<scope>` is what any exact collection of those
tensors pays at least, on a warm session like the fp32 row: ONNX Runtime with them exposed and every
value read once (calibrate's pass 1); what the goal's 25% must cover beyond it is the binning. Goals (issue 4): single-pass <= 1.25x one inference pass, two-pass <= 2.25x, >= 30x faster
than onnxruntime Entropy, memory bounded by one batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "TensorRT calibration entropy histogram onnx runtime engine layer tensor scale amax kernel numba batch "
    "stream memory device buffer cache header version python image letterbox resize mean std layout float "
    "quantize int8 symmetric range bins merge state sidecar hash finger print model graph node input output "
    "shape dynamic static profile builder network parser plugin precision latency throughput warmup median "
    "percentile sample dataset words"
).split()


def rec_model() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        sys.exit("pip install rapidocr-onnxruntime (the benchmark's model comes from its wheel)")
    return (
        Path(next(iter(spec.submodule_search_locations))) / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    )


def make_data(folder: Path, words: int, height: int, width: int) -> Path:
    """Render `words` words, preprocess them like PaddleOCR's recogniser, save (N, 3, H, W) float32."""
    import numpy as np
    from PIL import Image, ImageDraw

    from onnx2trt_lib.calib.preprocess import PRESETS

    pre = PRESETS["paddleocr-rec"].with_size((height, width))
    rng = np.random.default_rng(0)
    samples = []
    for index in range(words):
        text = " ".join(WORDS[(index + k) % len(WORDS)] for k in range(1 + index % 3))
        image = Image.new(
            "RGB", (24 + 9 * len(text), 32), tuple(int(v) for v in rng.integers(170, 256, 3))
        )
        ImageDraw.Draw(image).text(
            (5, 10), text, fill=tuple(int(v) for v in rng.integers(0, 90, 3))
        )
        samples.append(pre.apply(image))
    path = folder / "words.npy"
    np.save(path, np.stack(samples))
    return path


# Each child: imports, warm-up outside the timed section, then the timed section; prints JSON.
CHILD = r"""
import json, os, sys, time, resource
def peak_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) / 1024
kind, model, data, batch, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
overlap = sys.argv[6] == 'on'
repeats = int(sys.argv[7])
import numpy as np, onnxruntime as ort
x = np.load(data)
batches = [x[i:i + batch] for i in range(0, len(x) - len(x) % batch, batch)]
start_rss = peak_mb()
extra = {}
if kind == 'fp32':
    t = time.perf_counter()  # cold: what a script pays for one pass (session, first-run allocations)
    so = ort.SessionOptions()
    from onnx2trt_lib.calib._threads import ort_threads
    so.intra_op_num_threads = ort_threads()  # as calibrate's session; right under taskset too
    s = ort.InferenceSession(model, so, providers=['CPUExecutionProvider'])
    for b in batches:
        s.run(None, {'x': b})
    extra['cold_seconds'] = time.perf_counter() - t
    seconds = float('inf')
    for _ in range(repeats):  # warm: the same session again, best of `repeats`
        t = time.perf_counter()
        for b in batches:
            s.run(None, {'x': b})
        seconds = min(seconds, time.perf_counter() - t)
elif kind.startswith('onnx2trt'):
    from onnx2trt_lib.calib.api import calibrate
    mode, scope = kind.split('-', 1)[1].rsplit('-', 1)
    calibrate(model, [{'x': batches[0]}], mode='single-pass', scope=scope)  # warm-up: numba cache load, ORT init paths
    seconds = float('inf')
    for _ in range(repeats):  # best of `repeats`, each a full recomputation
        t = time.perf_counter()
        r = calibrate(model, data, batch_size=batch, mode=mode, scope=scope, overlap=overlap, output=out, force=True)
        seconds = min(seconds, time.perf_counter() - t)
    assert r.num_samples == len(batches) * batch
elif kind.startswith('floor'):
    # the floor of any exact collection: ORT with the same tensors exposed and every value read once
    # (|max|, calibrate's pass 1), nothing binned; on a warmed-up session, like the fp32 row
    import onnx
    from onnx2trt_lib.calib.collect import CollectOptions, _Collector
    from onnx2trt_lib.calib.dataset import open_source
    from onnx2trt_lib.calib import abs_max
    abs_max(np.zeros(4, np.float32))  # numba's cache loaded, as calibrate's warm-up does
    t = time.perf_counter()  # cold: a fresh session's first read (what calibrate pays: session, first-run page faults)
    collector = _Collector(onnx.load(model), open_source(data), {}, batch, CollectOptions(scope=kind.split('-', 1)[1]), None)
    collector.range_pass()
    extra['cold_seconds'] = time.perf_counter() - t
    seconds = float('inf')
    for _ in range(repeats):
        t = time.perf_counter()
        collector.range_pass()
        seconds = min(seconds, time.perf_counter() - t)
elif kind == 'ort-entropy':
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
    class Reader(CalibrationDataReader):
        def __init__(self): self.it = iter(batches)
        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {'x': b}
    t = time.perf_counter()
    quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, calibrate_method=CalibrationMethod.Entropy)
    seconds = time.perf_counter() - t
print(json.dumps({'kind': kind, 'seconds': seconds, 'peak_mb': peak_mb(), 'rss_before_mb': start_rss, **extra}))
"""


def _pinned(cores: int | None):
    """preexec_fn pinning a child to the first `cores` CPUs of ours (None: no pinning)."""
    if cores is None:
        return None
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    return lambda: os.sched_setaffinity(0, cpus)


def measure(
    kind: str,
    model: Path,
    data: Path,
    batch: int,
    out: Path,
    timeout: int,
    overlap: str = "off",
    repeats: int = 3,
    cores: int | None = None,
    src: str | None = None,
) -> dict:
    started = time.perf_counter()
    env = dict(os.environ)
    if src:  # another checkout's library (the baseline rows)
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                kind,
                str(model),
                str(data),
                str(batch),
                str(out),
                overlap,
                str(repeats),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            preexec_fn=_pinned(cores),
        )
    except subprocess.TimeoutExpired:
        return {"kind": kind, "error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"kind": kind, "error": f"exit {proc.returncode}: {tail}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def run_group(args, model: Path, words: int, cores: int | None) -> tuple[list[dict], str]:
    """Every row of one (words, cores) run, and its markdown table."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_data(folder, words, args.height, args.width)
        load_before = os.getloadavg()
        ours = [
            f"{kind}-{scope}"
            for scope in args.scopes.split(",")
            for kind in ("floor", "onnx2trt-single-pass", "onnx2trt-two-pass")
        ]
        entropy = not args.skip_ort_quant and (
            args.ort_words is None or words in _ints(args.ort_words)
        )
        kinds = ["fp32", *ours] + (["ort-entropy"] if entropy else [])
        settings = ("off", "on") if args.overlap == "both" else (args.overlap,)
        sources = [(None, "")] + ([(args.baseline_src, " (baseline)")] if args.baseline_src else [])
        rows = []
        for kind in kinds:
            out = folder / ("q.onnx" if kind == "ort-entropy" else f"{kind}.cache")
            for src, label in sources if kind.startswith("onnx2trt") else sources[:1]:
                for overlap in settings if kind.startswith("onnx2trt") else (args.overlap,):
                    rows.append(
                        measure(
                            kind,
                            model,
                            data,
                            args.batch_size,
                            out,
                            args.ort_timeout if kind == "ort-entropy" else 600,
                            overlap,
                            args.repeats,
                            cores,
                            src,
                        )
                    )
                    if kind.startswith("onnx2trt") and overlap == "on":
                        rows[-1]["kind"] += " (overlap)"
                    rows[-1]["kind"] += label
                    print(json.dumps(rows[-1]), file=sys.stderr)
        load_after = os.getloadavg()
    fp32 = next((r for r in rows if r["kind"] == "fp32" and "seconds" in r), {})
    base, cold = fp32.get("seconds"), fp32.get("cold_seconds")
    usable = (
        len(os.sched_getaffinity(0)) if cores is None else min(cores, len(os.sched_getaffinity(0)))
    )
    lines = [
        f"PP-OCRv4 rec ({model.name}), {words} rendered words, input {args.batch_size}x3x{args.height}x{args.width}, "
        f"batch {args.batch_size}; {platform.processor() or platform.machine()}, {usable} usable cores of {os.cpu_count()}, "
        f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after (shared machine); overlap {args.overlap}; "
        f"best of {args.repeats} (onnxruntime Entropy: one run).",
        "",
        "x warm = over FP32 inference on a warmed-up session (the goal's yardstick); x cold = over a fresh "
        f"session's first pass ({cold:.2f} s), which, like `calibrate`, pays session creation and first-run "
        "allocations."
        if cold
        else "",
        "",
        "x cold floor = over the floor's first read on a fresh session (session creation and the first "
        "run's page faults for the exposed tensors included, as in `calibrate`'s time; the floor's own "
        "row shows that cold time).",
        "",
        "| run | seconds | x warm FP32 inference | x cold FP32 inference | x floor (same scope) | x cold floor | peak RSS MB | RSS at start MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    floors = {
        r["kind"].split("-", 1)[1]: r["seconds"]
        for r in rows
        if r["kind"].startswith("floor-") and "seconds" in r
    }
    cold_floors = {
        r["kind"].split("-", 1)[1]: r["cold_seconds"]
        for r in rows
        if r["kind"].startswith("floor-") and "cold_seconds" in r
    }
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r['error']} | | | | | | |")
            continue
        warm = f"{r['seconds'] / base:.2f}" if base else "?"
        fresh = f"{r['seconds'] / cold:.2f}" if cold else "?"
        scope = r["kind"].split(" ")[0].rsplit("-", 1)[-1]
        floor = (
            f"{r['seconds'] / floors[scope]:.2f}"
            if scope in floors and r["kind"].startswith(("onnx2trt", "floor"))
            else ""
        )
        r["x_floor"] = r["seconds"] / floors[scope] if floor else None
        if r["kind"].startswith("floor") and "cold_seconds" in r:
            cold_floor = f"cold {r['cold_seconds']:.2f} s"
        elif r["kind"].startswith("onnx2trt") and scope in cold_floors:
            cold_floor = f"{r['seconds'] / cold_floors[scope]:.2f}"
        else:
            cold_floor = ""
        lines.append(
            f"| {r['kind']} | {r['seconds']:.2f} | {warm} | {fresh} | {floor} | {cold_floor} | {r['peak_mb']:.0f} | {r['rss_before_mb']:.0f} |"
        )
    for r in rows:
        r["load"] = (load_before[0], load_after[0])
    return rows, "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip()]


GOALS = {"single-pass": 1.25, "two-pass": 2.25}


def summary(groups: list[tuple[int, int | None, list[dict]]], scopes: list[str]) -> str:
    """One line per (words, cores): x floor of every calibrate row against the goals, and Entropy."""
    header = ["words", "cores", "load before/after", "fp32 s"]
    for scope in scopes:
        header += [f"floor-{scope} s"] + [f"{m} {scope} x floor" for m in GOALS]
    header += ["ORT Entropy s", "Entropy / our slowest"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for words, cores, rows in groups:
        by = {r["kind"]: r for r in rows if "seconds" in r}
        load = rows[0]["load"] if rows else (0, 0)
        cells = [str(words), str(cores or "all"), f"{load[0]:.1f} / {load[1]:.1f}"]
        cells.append(f"{by['fp32']['seconds']:.2f}" if "fp32" in by else "?")
        for scope in scopes:
            floor = by.get(f"floor-{scope}")
            cells.append(f"{floor['seconds']:.2f}" if floor else "?")
            for mode, goal in GOALS.items():
                found = [
                    (kind, r)
                    for kind, r in by.items()
                    if kind.startswith(f"onnx2trt-{mode}-{scope}") and r.get("x_floor")
                ]
                text = []
                for kind, r in found:
                    tag = kind[len(f"onnx2trt-{mode}-{scope}") :].strip()
                    ok = "met" if r["x_floor"] <= goal else "not met"
                    text.append(f"{r['x_floor']:.2f} ({ok}){' ' + tag if tag else ''}")
                cells.append("; ".join(text) or "?")
        ent = by.get("ort-entropy")
        ours = [
            r["seconds"]
            for kind, r in by.items()
            if kind.startswith("onnx2trt") and "baseline" not in kind
        ]
        cells.append(f"{ent['seconds']:.2f}" if ent else "not run")
        cells.append(f"{ent['seconds'] / max(ours):.1f}x" if ent and ours else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="default: PP-OCRv4 rec from rapidocr-onnxruntime"
    )
    parser.add_argument(
        "--words", default="64", help="rendered words; a comma list runs each (e.g. 64,256)"
    )
    parser.add_argument(
        "--cores",
        default=None,
        help="comma list of core counts: each group pins its runs to the first N usable CPUs "
        "(like taskset); default: no pinning",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--skip-ort-quant", action="store_true")
    parser.add_argument(
        "--ort-words",
        default=None,
        help="run onnxruntime's Entropy only at these word counts (its memory grows with the "
        "data: 13 GB at 64 words)",
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="also run our rows with this source folder first on PYTHONPATH (e.g. main's src), "
        "labelled (baseline)",
    )
    parser.add_argument(
        "--scopes", default="all,qdq", help="tensor scopes of our runs (calibrate(scope=...))"
    )
    parser.add_argument(
        "--overlap",
        choices=("on", "off", "both"),
        default="off",
        help="calibrate(overlap=True): ORT runs the next batch while this one is binned (both: "
        "every calibrate row twice, off and on, in the same run)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="FP32 inference and our runs: best of this many (onnxruntime's quantize_static runs once)",
    )
    parser.add_argument("--ort-timeout", type=int, default=1800)
    parser.add_argument("--write", type=Path, default=None, help="write the markdown tables here")
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="write the goal summary and every group's table here (markdown)",
    )
    args = parser.parse_args()
    model = args.model or rec_model()
    core_counts: list[int | None] = [*_ints(args.cores)] if args.cores else [None]
    groups, tables = [], []
    for cores in core_counts:
        for words in _ints(args.words):
            if cores is not None and cores > len(os.sched_getaffinity(0)):
                print(
                    f"skipping {cores} cores: only {len(os.sched_getaffinity(0))} usable",
                    file=sys.stderr,
                )
                continue
            rows, table = run_group(args, model, words, cores)
            groups.append((words, cores, rows))
            tables.append(f"{words} words, {cores or 'all'} cores:\n\n{table}")
            print(tables[-1] + "\n")
    scopes = args.scopes.split(",")
    text = summary(groups, scopes)
    print(text)
    if args.write:
        args.write.write_text("\n\n".join(tables) + "\n")
    if args.summary:
        args.summary.write_text(text + "\n\n" + "\n\n".join(tables) + "\n")


if __name__ == "__main__":
    main()
