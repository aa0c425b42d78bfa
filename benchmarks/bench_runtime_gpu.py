"""GPU benchmark of onnx2trt_lib.runtime.cuda (run by hand on a GPU machine).

1. Host<->device bandwidth: our pinned HostBuffer vs pageable numpy vs cupy and torch doing
   the same copies (goal: ours pinned within 5% of the best).
2. Per-inference overhead of our async path on a chain of small copies/memsets (and cupy
   kernels when cupy is there), issued one by one vs replayed as a CUDA graph, and of
   TrtRunner.infer on a fake engine whose execute enqueues that chain (goal: graph >= 3x lower).

Usage: PYTHONPATH=src python benchmarks/bench_runtime_gpu.py [--out DIR] [--size-mib 256]
Prints a markdown report; with --out also writes runtime_bench.md and runtime_bench.json there.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnx2trt_lib._io import write_text_atomic
from onnx2trt_lib.runtime import cuda


def device_info() -> dict[str, Any]:
    rt = cuda._rt()
    props = cuda.call("cudaGetDeviceProperties", 0)
    name = (
        props.name.decode(errors="replace").rstrip("\x00")
        if isinstance(props.name, bytes)
        else str(props.name)
    )
    info = {
        "device": name,
        "compute_capability": f"{props.major}.{props.minor}",
        "driver": cuda.call("cudaDriverGetVersion"),
        "runtime": cuda.call("cudaRuntimeGetVersion"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cudart_module": rt.__name__,
    }
    for mod in ("torch", "cupy", "cuda.bindings"):
        try:
            info[mod] = __import__(mod, fromlist=["_"]).__version__
        except Exception as exc:  # noqa: BLE001 - report what is missing
            info[mod] = f"absent ({type(exc).__name__})"
    return info


def timed(fn: Callable[[], None], sync: Callable[[], None], reps: int, warmup: int = 2) -> float:
    """Seconds per rep: wall clock around `reps` calls and one final sync (same method for every library)."""
    for _ in range(warmup):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - start) / reps


def best_of(n: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(n))


# ------------------------------------------------------------------------------ bandwidth


def bandwidth(size: int, reps: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(lib: str, memory: str, direction: str, seconds: float) -> None:
        rows.append(
            {
                "library": lib,
                "host_memory": memory,
                "direction": direction,
                "GB_per_s": size / seconds / 1e9,
                "ms": seconds * 1e3,
            }
        )

    stream = cuda.Stream()
    dev = cuda.DeviceBuffer(size)
    pinned = cuda.HostBuffer(size).array((size,), np.uint8)
    pageable = np.ones(size, np.uint8)
    for direction, fn_pin, fn_page in (
        (
            "H2D",
            lambda: dev.copy_from_host(pinned, stream=stream),
            lambda: dev.copy_from_host(pageable, stream=stream),
        ),
        (
            "D2H",
            lambda: dev.copy_to_host(pinned, stream=stream),
            lambda: dev.copy_to_host(pageable, stream=stream),
        ),
    ):
        add(
            "onnx2trt_lib.runtime.cuda",
            "pinned",
            direction,
            best_of(3, lambda f=fn_pin: timed(f, stream.synchronize, reps)),
        )
        add(
            "onnx2trt_lib.runtime.cuda",
            "pageable",
            direction,
            best_of(3, lambda f=fn_page: timed(f, stream.synchronize, reps)),
        )
    dev.close()

    try:
        import cupy as cp

        cs = cp.cuda.Stream(non_blocking=True)
        d = cp.empty(size, cp.uint8)
        mem = cp.cuda.alloc_pinned_memory(size)
        h_pin = np.frombuffer(mem, np.uint8, size)
        h_page = np.ones(size, np.uint8)
        add(
            "cupy " + cp.__version__,
            "pinned",
            "H2D",
            best_of(3, lambda: timed(lambda: d.set(h_pin, stream=cs), cs.synchronize, reps)),
        )
        add(
            "cupy " + cp.__version__,
            "pageable",
            "H2D",
            best_of(3, lambda: timed(lambda: d.set(h_page, stream=cs), cs.synchronize, reps)),
        )
        add(
            "cupy " + cp.__version__,
            "pinned",
            "D2H",
            best_of(3, lambda: timed(lambda: d.get(stream=cs, out=h_pin), cs.synchronize, reps)),
        )
        add(
            "cupy " + cp.__version__,
            "pageable",
            "D2H",
            best_of(3, lambda: timed(lambda: d.get(stream=cs, out=h_page), cs.synchronize, reps)),
        )
        d = None  # free the device buffer before the torch rows
    except Exception as exc:  # noqa: BLE001
        print(f"cupy bandwidth skipped: {exc}", file=sys.stderr)

    try:
        import torch

        t_dev = torch.empty(size, dtype=torch.uint8, device="cuda")
        t_pin = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        t_page = torch.ones(size, dtype=torch.uint8)
        sync = torch.cuda.synchronize
        lib = "torch " + torch.__version__
        add(
            lib,
            "pinned",
            "H2D",
            best_of(3, lambda: timed(lambda: t_dev.copy_(t_pin, non_blocking=True), sync, reps)),
        )
        add(
            lib,
            "pageable",
            "H2D",
            best_of(3, lambda: timed(lambda: t_dev.copy_(t_page), sync, reps)),
        )
        add(
            lib,
            "pinned",
            "D2H",
            best_of(3, lambda: timed(lambda: t_pin.copy_(t_dev, non_blocking=True), sync, reps)),
        )
        add(
            lib,
            "pageable",
            "D2H",
            best_of(3, lambda: timed(lambda: t_page.copy_(t_dev), sync, reps)),
        )
        t_dev = None  # free the device buffer
    except Exception as exc:  # noqa: BLE001
        print(f"torch bandwidth skipped: {exc}", file=sys.stderr)
    stream.close()
    return rows


# ------------------------------------------------------------------------------ launch overhead


def _median_per_iter(fn: Callable[[], None], iters: int) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        samples.append((time.perf_counter() - start) / iters)
    return statistics.median(samples)


def _launch_us(enqueue: Callable[[], Any], sync: Callable[[], None], iters: int) -> float:
    """Median host time of one submission, GPU idle at the start (so the GPU never throttles the host)."""
    samples = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        enqueue()
        samples.append(time.perf_counter() - start)
    sync()
    return statistics.median(samples) * 1e6


def overhead(chain_len: int, iters: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    stream = cuda.Stream()
    nbytes = 4096
    a, b = cuda.DeviceBuffer(nbytes), cuda.DeviceBuffer(nbytes)

    def enqueue_chain(s: cuda.Stream = stream) -> None:
        for i in range(chain_len):
            if i % 2:
                b.copy_from_device(a, stream=s)
            else:
                a.memset(i & 0xFF, stream=s)

    graph = cuda.CudaGraph()
    with graph.capture(stream):
        enqueue_chain()

    def direct() -> None:
        enqueue_chain()
        stream.synchronize()

    def replay() -> None:
        graph.launch(stream)
        stream.synchronize()

    t_direct = _median_per_iter(direct, iters)
    t_graph = _median_per_iter(replay, iters)
    l_direct = _launch_us(enqueue_chain, stream.synchronize, iters)
    l_graph = _launch_us(lambda: graph.launch(stream), stream.synchronize, iters)
    rows.append(
        {
            "what": f"chain of {chain_len} memset/memcpy ({nbytes} B): launch overhead (host time to submit)",
            "direct_us": l_direct,
            "graph_us": l_graph,
            "ratio": l_direct / l_graph,
        }
    )
    rows.append(
        {
            "what": f"chain of {chain_len} memset/memcpy: end to end (submit + sync)",
            "direct_us": t_direct * 1e6,
            "graph_us": t_graph * 1e6,
            "ratio": t_direct / t_graph,
        }
    )

    try:
        import cupy as cp

        ext = cp.cuda.ExternalStream(
            stream.ptr
        )  # deprecated in cupy 14 but still the portable spelling
        scale = cp.ElementwiseKernel("T x", "T y", "y = x * (T)1.0001 + (T)1", "bench_scale")
        x = cp.ones(1024, cp.float32)
        y = cp.empty_like(x)
        cp.cuda.runtime.deviceSynchronize()

        def kernels() -> None:
            with ext:
                for i in range(chain_len):
                    if i % 2:
                        scale(y, x)
                    else:
                        scale(x, y)

        kernels()
        stream.synchronize()
        kgraph = cuda.CudaGraph()
        with kgraph.capture(stream):
            kernels()

        def k_direct() -> None:
            kernels()
            stream.synchronize()

        def k_replay() -> None:
            kgraph.launch(stream)
            stream.synchronize()

        t_kd, t_kg = _median_per_iter(k_direct, iters), _median_per_iter(k_replay, iters)
        l_kd = _launch_us(kernels, stream.synchronize, iters)
        l_kg = _launch_us(lambda: kgraph.launch(stream), stream.synchronize, iters)
        rows.append(
            {
                "what": f"chain of {chain_len} cupy elementwise kernels (1024 floats): launch overhead",
                "direct_us": l_kd,
                "graph_us": l_kg,
                "ratio": l_kd / l_kg,
            }
        )
        rows.append(
            {
                "what": f"chain of {chain_len} cupy elementwise kernels: end to end (submit + sync)",
                "direct_us": t_kd * 1e6,
                "graph_us": t_kg * 1e6,
                "ratio": t_kd / t_kg,
            }
        )
        kgraph.close()
    except Exception as exc:  # noqa: BLE001
        print(f"cupy kernel chain skipped: {exc}", file=sys.stderr)

    graph.close()
    a.close()
    b.close()
    stream.close()
    return rows


def runner_overhead(chain_len: int, iters: int) -> list[dict[str, Any]]:
    """TrtRunner.infer with a fake engine whose execute_async_v3 enqueues a chain like the above."""
    from onnx2trt_lib.runtime.trt_runner import TrtRunner

    rows: list[dict[str, Any]] = []
    engine = _ChainEngine(chain_len)
    x_host = np.ones((1, 1024), np.float32)
    launch, total = {}, {}
    for use_graph in (False, True):
        with TrtRunner(engine, cuda_graph=use_graph) as runner:
            feed = {"x": x_host}
            runner.infer(feed)
            runner.infer(feed)  # graph captured by now
            total[use_graph] = _median_per_iter(lambda r=runner, f=feed: r.infer(f), iters) * 1e6
            launch[use_graph] = _launch_us(
                lambda r=runner, f=feed: r.infer_async(f), runner.stream.synchronize, iters
            )
    what = f"TrtRunner, 4 KiB in/out, fake engine = chain of {chain_len}"
    rows.append(
        {
            "what": what
            + ": infer_async overhead (host time to submit, checks + staging included)",
            "direct_us": launch[False],
            "graph_us": launch[True],
            "ratio": launch[False] / launch[True],
        }
    )
    rows.append(
        {
            "what": what + ": infer end to end (submit + sync + output copy)",
            "direct_us": total[False],
            "graph_us": total[True],
            "ratio": total[False] / total[True],
        }
    )
    return rows


class _ChainContext:
    def __init__(self, chain_len: int) -> None:
        self.chain_len, self.shapes, self.addr = chain_len, {}, {}

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return self.shapes.get("x", (1, 1024))

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        d2d = cuda._memcpy_kind("cudaMemcpyDeviceToDevice")
        for i in range(self.chain_len):
            if i % 2:
                cuda.call("cudaMemcpyAsync", self.addr["y"], self.addr["x"], 4096, d2d, stream)
            else:
                cuda.call("cudaMemsetAsync", self.addr["y"], i & 0xFF, 4096, stream)
        return True


class _Enum:
    def __init__(self, name: str) -> None:
        self.name = name


class _ChainEngine:
    num_io_tensors = 2

    def __init__(self, chain_len: int) -> None:
        self.chain_len = chain_len

    def get_tensor_name(self, i: int) -> str:
        return ("x", "y")[i]

    def get_tensor_mode(self, name: str) -> _Enum:
        return _Enum("INPUT" if name == "x" else "OUTPUT")

    def get_tensor_dtype(self, name: str) -> _Enum:
        return _Enum("FLOAT")

    def get_tensor_shape(self, name: str) -> tuple:
        return (1, 1024)

    def create_execution_context(self) -> _ChainContext:
        return _ChainContext(self.chain_len)


# ------------------------------------------------------------------------------ report


def to_markdown(
    info: dict[str, Any], bw: list[dict[str, Any]], oh: list[dict[str, Any]], size: int
) -> str:
    lines = ["### Environment", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        "",
        f"### Host<->device bandwidth ({size >> 20} MiB per copy; best of 3 x 10 copies)",
        "",
        "| library | host memory | direction | GB/s | ms per copy |",
        "|---|---|---|---:|---:|",
    ]
    for r in bw:
        lines.append(
            f"| {r['library']} | {r['host_memory']} | {r['direction']} | {r['GB_per_s']:.2f} | {r['ms']:.3f} |"
        )
    lines.append("")
    for direction in ("H2D", "D2H"):
        pinned = [r for r in bw if r["direction"] == direction]
        best = max(pinned, key=lambda r: r["GB_per_s"])
        ours = next(
            r
            for r in pinned
            if r["library"].startswith("onnx2trt") and r["host_memory"] == "pinned"
        )
        ratio = ours["GB_per_s"] / best["GB_per_s"]
        verdict = "MET" if ratio >= 0.95 else "NOT MET"
        lines.append(
            f"- {direction}: ours pinned {ours['GB_per_s']:.2f} GB/s = {ratio * 100:.1f}% of the best "
            f"({best['library']} {best['host_memory']}, {best['GB_per_s']:.2f} GB/s): goal >= 95% {verdict}"
        )
    lines += [
        "",
        "### Per-inference overhead: issued call by call vs CUDA graph replay",
        "",
        "Launch overhead = median host time of one submission starting with an idle GPU; end to end = "
        "median of 5 x N back-to-back submit+sync. The 3x goal applies to launch overhead.",
        "",
        "| what | direct (us) | graph (us) | direct / graph |",
        "|---|---:|---:|---:|",
    ]
    for r in oh:
        verdict = ""
        if "overhead" in r["what"]:
            verdict = " (goal >= 3x: MET)" if r["ratio"] >= 3 else " (goal >= 3x: NOT MET)"
        lines.append(
            f"| {r['what']} | {r['direct_us']:.1f} | {r['graph_us']:.1f} | {r['ratio']:.2f}x{verdict} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--iters", type=int, default=300)
    args = parser.parse_args()
    if not cuda.gpu_available():
        sys.exit("no CUDA device visible: run this on a GPU machine")
    size = args.size_mib << 20
    info = device_info()
    bw = bandwidth(size, args.reps)
    oh = overhead(args.chain, args.iters)
    for chain in (args.chain, 100):
        oh += runner_overhead(chain, args.iters)
    report = to_markdown(info, bw, oh, size)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "runtime_bench.md", report)
        write_text_atomic(
            args.out / "runtime_bench.json",
            json.dumps({"env": info, "bandwidth": bw, "overhead": oh}, indent=2),
        )


if __name__ == "__main__":
    main()
