"""An instant CLI: `--help`, `inspect CACHE` and an engine-cache hit import only what they need.

Import sets, not timings, are asserted here (timings live in benchmarks/bench_cli_startup.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

import onnx2trt_lib as o2t
from onnx2trt_lib.cli.main import SUBCOMMANDS, SUMMARIES, cli

HEAVY = ("onnx", "numpy", "ml_dtypes", "numba", "onnxruntime", "onnx_graphsurgeon", "tensorrt_rtx")


def _imported(*args: str, env: dict | None = None) -> tuple[set[str], subprocess.CompletedProcess]:
    """Top-level modules a CLI run imports (python -X importtime), and the run itself."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "onnx2trt_lib.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names, proc


def test_help_summaries_are_each_commands_own_short_help() -> None:
    assert set(SUMMARIES) == set(SUBCOMMANDS)
    ctx = click.Context(cli)
    for name in SUBCOMMANDS:
        assert SUMMARIES[name] == cli.get_command(ctx, name).get_short_help_str(limit=1000), name


def test_help_imports_neither_onnx_nor_numpy_nor_rich() -> None:
    names, proc = _imported("--help")
    assert proc.returncode == 0 and "quantize" in proc.stdout
    assert not names & {*HEAVY, "rich"}, sorted(names & {*HEAVY, "rich"})


def test_inspect_of_a_cache_imports_no_numeric_library(tmp_path: Path) -> None:
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\nimage: 3c010a14\nlogits: 3d4ccccd\n")
    names, proc = _imported("inspect", str(cache))
    assert proc.returncode == 0 and "logits" in proc.stdout
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


@pytest.mark.trt
def test_engine_cache_hit_imports_neither_onnx_nor_tensorrt(tmp_path: Path) -> None:
    env = {"ONNX2TRT_CACHE_DIR": str(tmp_path / "cache")}
    model = o2t.sample_dir() / "digits.onnx"
    args = ["build", str(model), "-o", str(tmp_path / "e.engine"), "--shapes", "image:1x1x8x8"]
    first, proc = _imported(*args, env=env)
    assert proc.returncode == 0 and "built" in proc.stdout, proc.stderr[-2000:]
    names, proc = _imported(*args, env=env)
    assert proc.returncode == 0 and "from the engine cache" in proc.stdout
    assert not names & {*HEAVY, "rich"}, sorted(names & {*HEAVY, "rich"})
    assert "onnx" in first  # the build itself needed it


def test_no_gpu_is_said_in_one_line(monkeypatch) -> None:
    from onnx2trt_lib.runtime import gpu

    gpu.no_gpu_reason.cache_clear()
    monkeypatch.setattr(gpu, "_DRIVER_LIBS", ("libcuda-not-here.so.1",))
    try:
        message = gpu.gpu_message("running an engine")
        assert message == (
            "running an engine needs an NVIDIA GPU: no NVIDIA GPU/driver found "
            "(the NVIDIA driver library libcuda-not-here.so.1 is not installed)"
        )
    finally:
        gpu.no_gpu_reason.cache_clear()


@pytest.mark.trt
def test_run_inspect_compare_on_an_engine_without_a_gpu_say_so(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from onnx2trt_lib.runtime.gpu import no_gpu_reason

    if no_gpu_reason() is None:
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(tmp_path / "cache"))
    model = o2t.sample_dir() / "digits.onnx"
    engine = tmp_path / "e.engine"
    runner = CliRunner()
    built = runner.invoke(
        cli, ["build", str(model), "-o", str(engine), "--shapes", "image:1x1x8x8"]
    )
    assert built.exit_code == 0, built.output
    for args in (["run", str(engine)], ["compare", str(engine), str(model)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1
        assert "no NVIDIA GPU/driver found" in result.output, result.output
        assert "insufficient" not in result.output and len(result.output.strip().splitlines()) == 1
    shown = runner.invoke(cli, ["inspect", str(engine)])
    assert shown.exit_code == 0 and "engine not loaded here" in shown.output
    assert "no NVIDIA GPU/driver found" in shown.output and "insufficient" not in shown.output


def test_rtx_and_tensorrt_extras_bring_cuda_python() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in ("rtx", "tensorrt"):
        assert any(req.startswith("cuda-python") for req in extras[extra]), extra


@pytest.mark.trt
def test_peeked_backend_matches_detection_and_a_wrong_peek_still_finds_the_engine(
    tmp_path: Path, monkeypatch
) -> None:
    from onnx2trt_lib.build import (
        BuildConfig,
        Builder,
        builder,
        detect_backend,
        profiles_from_specs,
    )
    from onnx2trt_lib.build.backends import Backend, peek_backend

    assert peek_backend() == detect_backend()
    config = BuildConfig(profiles=profiles_from_specs(["image:1x1x8x8"]))
    model = o2t.sample_dir() / "digits.onnx"
    first = Builder(config, cache_dir=tmp_path).build(model)
    assert not first.cache_hit
    wrong = Backend("tensorrt-rtx", "tensorrt_rtx", "0.0.1")
    monkeypatch.setattr(builder, "peek_backend", lambda name: wrong)
    again = Builder(config, cache_dir=tmp_path).build(model)
    assert again.cache_hit and again.backend == detect_backend()
