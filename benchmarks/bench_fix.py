"""`onnx2trt fix` vs onnxsim vs onnxslim on a large generated model: wall time and peak memory.

Each tool runs in its own fresh process (load, simplify/fix, save), so peak RSS is its own.
`fix` checks its result in ONNX Runtime by default (as onnxsim does); "--no-check" is fix
without it.

    python benchmarks/bench_fix.py [--blocks 6000] [--repeats 3]
    python benchmarks/bench_fix.py --models a.onnx b.onnx [--tools "onnx2trt fix,onnxsim"]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = 8


def build_large_model(blocks: int, path: Path) -> int:
    """A residual chain: per block Conv1x1 -> Relu -> Mul(folded const) -> Add(residual).

    Every 500th block adds an align_corners Resize (scale 1, keeps shapes) so fix-resize
    has real work; each Mul constant is an Add of two initializers, so folding has work.
    """
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for b in range(blocks):
        w = numpy_helper.from_array(
            (rng.standard_normal((CHANNELS, CHANNELS, 1, 1)) * 0.1).astype(np.float32), f"w{b}"
        )
        k0 = numpy_helper.from_array(np.full((1, CHANNELS, 1, 1), 0.25, np.float32), f"k0_{b}")
        k1 = numpy_helper.from_array(np.full((1, CHANNELS, 1, 1), 0.25, np.float32), f"k1_{b}")
        inits += [w, k0, k1]
        nodes += [
            helper.make_node("Conv", [prev, f"w{b}"], [f"c{b}"], name=f"conv{b}"),
            helper.make_node("Relu", [f"c{b}"], [f"r{b}"], name=f"relu{b}"),
            helper.make_node("Add", [f"k0_{b}", f"k1_{b}"], [f"k{b}"], name=f"kadd{b}"),
            helper.make_node("Mul", [f"r{b}", f"k{b}"], [f"m{b}"], name=f"mul{b}"),
            helper.make_node("Add", [f"m{b}", prev], [f"y{b}"], name=f"res{b}"),
        ]
        prev = f"y{b}"
        if b % 500 == 0:
            inits.append(numpy_helper.from_array(np.array([1, 1, 1, 1], np.float32), f"s{b}"))
            nodes.append(
                helper.make_node(
                    "Resize",
                    [prev, "", f"s{b}"],
                    [f"z{b}"],
                    name=f"resize{b}",
                    mode="linear",
                    coordinate_transformation_mode="align_corners",
                )
            )
            prev = f"z{b}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, 16, 16])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return len(nodes)


CHILD = {
    "onnx2trt fix": (
        "import onnx2trt_lib, onnx\n"
        "m, r = onnx2trt_lib.fix(IN, target='tensorrt-7.1')\n"
        "onnx.save(m, OUT)\n"
    ),
    "onnx2trt fix --no-check": (
        "import onnx2trt_lib, onnx\n"
        "m, r = onnx2trt_lib.fix(IN, target='tensorrt-7.1', check=False)\n"
        "onnx.save(m, OUT)\n"
    ),
    "onnxsim": "import onnx, onnxsim\nm, ok = onnxsim.simplify(onnx.load(IN))\nonnx.save(m, OUT)\n",
    "onnxslim": "import onnx, onnxslim\nm = onnxslim.slim(onnx.load(IN))\nonnx.save(m, OUT)\n",
}

_WRAP = """
import resource, time, sys, json
IN, OUT = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
{body}
t1 = time.perf_counter()
import onnx
nodes = len(onnx.load(OUT, load_external_data=False).graph.node)
print(json.dumps({{"seconds": t1 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "nodes_out": nodes}}))
"""


def run_tool(name: str, model: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _WRAP.format(body=CHILD[name]), str(model), str(out)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def real_models(paths: list[str], tools: list[str]) -> None:
    """One run of each tool on each model file (a table row per model)."""
    print(f"load average {os.getloadavg()[0]:.2f}; cpus {os.cpu_count()}; one run each (seconds)")
    print("| model | nodes | " + " | ".join(tools) + " |")
    print("|---|---:|" + "---:|" * len(tools))
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            nodes = len(onnx.load(path, load_external_data=False).graph.node)
            cells = []
            for name in tools:
                r = run_tool(name, Path(path), Path(tmp) / "out.onnx")
                cells.append(r["error"][:60] if "error" in r else f"{r['seconds']:.2f}")
            print(f"| {Path(path).name} | {nodes} | " + " | ".join(cells) + " |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", help="real model files instead of the generated one")
    parser.add_argument("--tools", default=",".join(CHILD), help="comma-separated tool names")
    args = parser.parse_args()
    if args.models:
        real_models(args.models, args.tools.split(","))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "large.onnx"
        n = build_large_model(args.blocks, model)
        print(
            f"model: {n} nodes, {model.stat().st_size / 1e6:.1f} MB; load average {os.getloadavg()[0]:.2f}; "
            f"cpus {os.cpu_count()}; repeats {args.repeats} (median)"
        )
        print(f"{'tool':<16}{'seconds':>10}{'peak MB':>10}{'nodes out':>11}")
        for name in CHILD:
            runs = [
                run_tool(name, model, Path(tmp) / f"{name.replace(' ', '_')}.onnx")
                for _ in range(args.repeats)
            ]
            if any("error" in r for r in runs):
                print(f"{name:<16} error: {next(r['error'] for r in runs if 'error' in r)}")
                continue
            sec = statistics.median(r["seconds"] for r in runs)
            mem = statistics.median(r["peak_rss_mb"] for r in runs)
            print(f"{name:<16}{sec:>10.2f}{mem:>10.0f}{runs[0]['nodes_out']:>11}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
