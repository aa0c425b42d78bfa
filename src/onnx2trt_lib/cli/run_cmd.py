"""`onnx2trt run`: run an engine or an ONNX model on inputs from a .npz, time it like trtexec."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from .._io import atomic_write, check_output_path, load_arrays
from ..errors import UsageError
from ._common import echo_lines, json_option, print_json, publishes_outputs, quiet_option

PERCENTILES = (50, 90, 95, 99)


def load_feed(path: Path) -> dict[str, np.ndarray]:
    """Inputs from a .npz whose keys are input names (no pickles: object arrays are refused)."""
    arrays = load_arrays(path, what="--input", error=UsageError)
    if isinstance(arrays, np.ndarray):
        raise UsageError(
            f"--input {path}: a .npy holds one unnamed array; save a .npz keyed by input name"
        )
    return arrays


def feeds_for(
    runner: Any, inputs: tuple[Path, ...], *, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """One feed per --input file; random data for static inputs when none is given."""
    if inputs:
        return [load_feed(p) for p in inputs]
    from ..runtime.base import random_feed

    return [random_feed(runner.inputs, seed=seed)]


def runner_options(
    source: Path, provider: str, cuda_graph: bool, allow_host_code: bool = False
) -> dict[str, Any]:
    from ..runtime import ONNX_SUFFIXES

    if source.suffix.lower() in ONNX_SUFFIXES:
        return {"providers": provider}
    return {"cuda_graph": cuda_graph, "allow_host_code": allow_host_code}


def allow_host_code_option(func: Any) -> Any:
    return click.option(
        "--allow-host-code",
        is_flag=True,
        help="Load version-compatible engines, which run the host code they embed (trusted engines only).",
    )(func)


def latency_stats(latencies_ms: list[float]) -> dict[str, float]:
    """min/max/mean/median and percentiles in ms, throughput in inferences per second."""
    lat = np.asarray(latencies_ms, dtype=np.float64)
    stats = {"min_ms": float(lat.min()), "max_ms": float(lat.max()), "mean_ms": float(lat.mean())}
    stats["median_ms"] = float(np.median(lat))
    for p in PERCENTILES:
        stats[f"p{p}_ms"] = float(np.percentile(lat, p))
    stats["throughput_qps"] = float(1000.0 / lat.mean()) if lat.mean() > 0 else float("inf")
    return stats


def save_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    arrays: dict[str, Any] = dict(
        outputs
    )  # Any: np.savez(**arrays) is checked against allow_pickle
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


@click.command("run")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=".npz of input arrays keyed by input name (random data for static inputs if omitted).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the outputs to this .npz.",
)
@click.option(
    "--iterations", "-n", default=10, show_default=True, type=click.IntRange(1), help="Timed runs."
)
@click.option(
    "--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed runs first."
)
@click.option(
    "--provider",
    type=click.Choice(["cpu", "cuda", "auto"]),
    default="cpu",
    show_default=True,
    help="ONNX Runtime provider for .onnx models.",
)
@click.option(
    "--cuda-graph", is_flag=True, help="Replay a CUDA graph for engines with static shapes."
)
@allow_host_code_option
@json_option
@quiet_option
@publishes_outputs
def command(
    source: Path,
    inputs: tuple[Path, ...],
    output: Path | None,
    iterations: int,
    warmup: int,
    provider: str,
    cuda_graph: bool,
    allow_host_code: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run ENGINE or MODEL (.onnx) and report latency percentiles and throughput, like trtexec.

    Latency is end to end per call (host copies included), measured on the host.
    """
    from ..runtime import open_runner

    if output is not None:
        check_output_path(output, inputs=(source, *inputs))
    with open_runner(
        source, **runner_options(source, provider, cuda_graph, allow_host_code)
    ) as runner:
        feed = feeds_for(runner, inputs)[0]
        for _ in range(warmup):
            runner.infer(feed)
        latencies = []
        outputs: dict[str, np.ndarray] = {}
        for _ in range(iterations):
            start = time.perf_counter()
            outputs = runner.infer(feed)
            latencies.append((time.perf_counter() - start) * 1e3)
        name = runner.name
    stats = latency_stats(latencies)
    if output is not None:
        save_outputs(output, outputs)
    if as_json:
        print_json(
            {
                "source": str(source),
                "runner": name,
                "iterations": iterations,
                "warmup": warmup,
                "latency": stats,
                "outputs": {
                    k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in outputs.items()
                },
                "output_file": str(output) if output else None,
            }
        )
        return
    lines = [f"{name}: {iterations} iterations after {warmup} warm-up"]
    lines.append(
        f"Latency: min = {stats['min_ms']:.4f} ms, max = {stats['max_ms']:.4f} ms, mean = {stats['mean_ms']:.4f} ms, "
        f"median = {stats['median_ms']:.4f} ms, "
        + ", ".join(f"percentile({p}%) = {stats[f'p{p}_ms']:.4f} ms" for p in PERCENTILES[1:])
    )
    lines.append(f"Throughput: {stats['throughput_qps']:.2f} qps")
    lines += [f"output {k}: {v.dtype.name}{list(v.shape)}" for k, v in outputs.items()]
    if output is not None:
        lines.append(f"wrote {output}")
    if not quiet:
        echo_lines(lines)
