"""Calibration on Ray: one process vs 1 and 2 Ray workers on this machine, and a model of a
100k-image calibration on N machines built from the per-image costs measured here.

Same model and data as bench_calibrate.py (PP-OCRv4 rec, N rendered words as an .npy). Every
run's outputs are checked to be the same bytes as the one-process run. Run by hand:

    python benchmarks/bench_calibrate_ray.py --words 64 [--write benchmarks/results/calibrate_ray.md]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_calibrate import make_data, rec_model  # noqa: E402


def digest(folder: Path) -> str:
    return hashlib.sha256(
        b"".join((folder / n).read_bytes() for n in ("c.cache", "r.json", "s.npz"))
    ).hexdigest()[:16]


REPORTS: dict[str, dict | None] = {}


def run(model: Path, data: Path, folder: Path, **kwargs) -> float:
    from onnx2trt_lib.calib.api import calibrate

    folder.mkdir(exist_ok=True)
    started = time.perf_counter()
    result = calibrate(
        model,
        str(data),
        batch_size=8,
        output=folder / "c.cache",
        ranges_path=folder / "r.json",
        save_state=folder / "s.npz",
        force=True,
        convergence=True,
        **kwargs,
    )
    REPORTS[folder.name] = result.convergence
    return time.perf_counter() - started


SHARD_SIZE = (
    1024  # calib.distributed's default (the run below patches the module's to get 8 shards)
)


def model_rows(
    per_image: float, session: float, state_bytes: int, merge: float, ray_start: float
) -> list[str]:
    """Written model: 100k images on N machines of 16 cores (one worker a core).

    shard   = min(SHARD_SIZE, images / workers)   (smaller shards once there are more workers)
    compute = ceil(shards / workers) * (shard * per_image_1core + session)
    reduce  = shards * (merge + state_bytes / 1.25 GB/s)   (the driver, one state at a time, 10 GbE)
    """
    images, cores = 100_000, 16
    rows = []
    for machines in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        workers = machines * cores
        shard = min(SHARD_SIZE, -(-images // workers))
        shards = -(-images // shard)
        compute = -(-shards // workers) * (shard * per_image + session)
        reduce = shards * (merge + state_bytes / 1.25e9)
        total = ray_start + compute + reduce
        rows.append(
            f"| {machines} | {workers} | {shard} | {compute:.0f} | {reduce:.1f} | {total:.0f} | "
            f"{images * per_image / total:.0f}x |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=64)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    import numpy as np
    import ray

    from onnx2trt_lib.calib.distributed import SHARD_SIZE as default_shard

    assert default_shard == SHARD_SIZE

    from onnx2trt_lib.calib import distributed
    from onnx2trt_lib.calib.state import CalibrationState

    model = rec_model()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp, args.words, 48, 320)
        one = run(model, data, tmp / "one")  # warm: numba compile, page cache
        one = run(model, data, tmp / "one")
        os.environ["ONNX2TRT_CALIB_THREADS"] = "1"
        one_1core = run(model, data, tmp / "one1")
        del os.environ["ONNX2TRT_CALIB_THREADS"]
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp / "r"))
        ray_start = time.perf_counter() - started
        distributed.SHARD_SIZE = max(1, args.words // 8)  # 8 shards: each pays a session start
        times = {}
        for workers in (1, 2):
            times[workers] = run(model, data, tmp / f"w{workers}", workers=workers)
        ray.shutdown()
        same = {digest(tmp / f) for f in ("one", "one1", "w1", "w2")}
        state = CalibrationState.load(tmp / "one" / "s.npz")
        buffer = io.BytesIO()
        state.save(tmp / "x.npz")
        state_bytes = (tmp / "x.npz").stat().st_size
        started = time.perf_counter()
        for _ in range(5):
            state.merge(state)
        merge = (time.perf_counter() - started) / 5
        del buffer
        # a shard's fixed cost: one ORT session with every tensor exposed + a 1-sample calibration
        tiny = tmp / "tiny.npy"
        np.save(tiny, np.load(data)[:1])
        session = run(model, tiny, tmp / "tiny")
    load_after = os.getloadavg()
    per_image = (one_1core - session) / args.words
    lines = [
        f"PP-OCRv4 rec, {args.words} words (48x320), scope all, two-pass, batch 8; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after (shared machine). "
        f"Ray {ray.__version__}, {len(range(0, args.words, distributed.SHARD_SIZE))} shards.",
        "",
        "| run | seconds | vs one process |",
        "|---|---|---|",
        f"| one process (2 threads) | {one:.2f} | 1.00x |",
        f"| one process (1 thread) | {one_1core:.2f} | {one_1core / one:.2f}x |",
        f"| Ray, 1 worker | {times[1]:.2f} | {times[1] / one:.2f}x |",
        f"| Ray, 2 workers | {times[2]:.2f} | {times[2] / one:.2f}x |",
        "",
        f"Outputs (cache, ranges, state) identical across the four runs: {len(same) == 1}. "
        f"Local Ray start: {ray_start:.1f} s (not in the rows).",
        "",
        "Convergence reports (`--convergence`; with workers the early state is the leading shards "
        "nearest 80% of the samples): "
        + "; ".join(
            f"{name}: {r['samples_before']} -> {r['samples_after']} samples, median move "
            f"{r['median_relative_move']:.2%}, max {r['max_relative_move']:.2%}"
            if r
            else f"{name}: none"
            for name, r in REPORTS.items()
            if name in ("one", "w1", "w2")
        )
        + ".",
        "",
        f"Measured per-image cost {per_image * 1000:.0f} ms on one core; per-shard fixed cost "
        f"(session + 1 sample) {session:.2f} s; state {state_bytes / 1e6:.1f} MB; merge "
        f"{merge * 1000:.1f} ms.",
        "",
        "Written model: 100,000 images, shards of at most 1,024 (smaller once there are more workers "
        "than shards), machines of 16 cores (one worker a core), a 10 GbE driver that merges states "
        "one at a time:",
        "",
        "| machines | workers | shard | compute s | reduce s | total s | speed-up vs 1 core |",
        "|---|---|---|---|---|---|---|",
        *model_rows(per_image, session, state_bytes, merge, ray_start),
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        args.write.write_text(f"# Calibration on Ray\n\n{text}\n")


if __name__ == "__main__":
    main()
