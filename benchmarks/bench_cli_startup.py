"""How fast the CLI answers: `--help`, `inspect CACHE`, an engine-cache hit, against the baseline
of the interpreter itself and of the old eager CLI's import of onnx.

Target (issue 18): `onnx2trt --help` < 0.3 s and an engine-cache hit through the CLI at most 2x
the time of `--help`. Each command is a fresh process (`python -m onnx2trt_lib.cli.main ...`),
the runs of all commands interleaved so that machine load hits them alike; medians reported.

    python benchmarks/bench_cli_startup.py [--repeat 15]

Prints a markdown table with the machine line; paste it into benchmarks/results/cli.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx2trt_lib


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    opts = parser.parse_args()
    model = onnx2trt_lib.sample_dir() / "digits.onnx"
    cli = [sys.executable, "-m", "onnx2trt_lib.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ONNX2TRT_CACHE_DIR": str(Path(tmp) / "cache")}
        cache = Path(tmp) / "digits.cache"
        cache.write_text("TRT-100300-EntropyCalibration2\nimage: 3c010a14\nlogits: 3d4ccccd\n")
        engine = str(Path(tmp) / "digits.engine")
        build = [
            *cli,
            "build",
            str(model),
            "-o",
            engine,
            "--shapes",
            "image:1x1x8x8/8x1x8x8/32x1x8x8",
        ]
        subprocess.run(build, check=True, env=env, stdout=subprocess.DEVNULL)  # fill the cache
        commands = {
            "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
            "python -c 'import onnx' (what --help paid before)": [
                sys.executable,
                "-c",
                "import onnx",
            ],
            "onnx2trt --help": [*cli, "--help"],
            "onnx2trt inspect CACHE": [*cli, "inspect", str(cache)],
            "onnx2trt build (engine-cache hit)": build,
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(opts.repeat):
            for name, args in commands.items():
                times[name].append(timed(args, env))
    load = os.getloadavg()
    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; {opts.repeat} runs each, interleaved"
    )
    print()
    help_median = statistics.median(times["onnx2trt --help"])
    print("| command | median s | min s | max s | x --help |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.3f} | {min(values):.3f} | {max(values):.3f} | {median / help_median:.2f} |"
        )


if __name__ == "__main__":
    main()
