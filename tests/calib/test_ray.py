"""Calibration on Ray (local, 2 CPU workers): the same bytes as one process, through a killed
worker, a Ctrl-C and a corrupt shard checkpoint; never a cache from part of the data."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from importlib import resources
from pathlib import Path

import pytest

from onnx2trt_lib.calib import distributed
from onnx2trt_lib.calib.api import calibrate

ray = pytest.importorskip("ray")

SAMPLE = Path(str(resources.files("onnx2trt_lib") / "data" / "sample"))
OUTPUTS = ("c.cache", "r.json", "s.npz")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray (2 CPUs) for the module: starting one costs seconds."""
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(distributed, "SHARD_SIZE", 8)  # 64 sample images -> 8 shards


def _run(folder: Path, **kwargs) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    calibrate(
        SAMPLE / "digits.onnx",
        str(SAMPLE / "calib_list.txt"),
        preprocess=SAMPLE / "preprocess.json",
        output=folder / "c.cache",
        ranges_path=folder / "r.json",
        save_state=folder / "s.npz",
        force=True,
        **kwargs,
    )
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in OUTPUTS}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, str]:
    return _run(tmp_path_factory.mktemp("one"), batch_size=4)


def test_two_workers_give_the_bytes_of_one_process(local_ray, small_shards, tmp_path, one_process):
    assert _run(tmp_path / "ray", workers=2, batch_size=3) == one_process
    assert not distributed.checkpoint_folder(tmp_path / "ray" / "c.cache").exists()
    from click.testing import CliRunner

    from onnx2trt_lib.cli.main import cli

    args = ["calibrate", str(SAMPLE / "digits.onnx"), "-d", str(SAMPLE / "calib_list.txt")]
    args += ["-p", str(SAMPLE / "preprocess.json"), "-o", str(tmp_path / "cli.cache")]
    run = CliRunner().invoke(cli, [*args, "--workers", "2", "-b", "5"])
    assert run.exit_code == 0, run.output
    digest = hashlib.sha256((tmp_path / "cli.cache").read_bytes()).hexdigest()
    assert digest == one_process["c.cache"]
    alone = CliRunner().invoke(cli, [*args, "--ray-address", "auto"])
    assert alone.exit_code != 0 and "--ray-address needs --workers" in alone.output


def _kill_first_shard_worker(stop: threading.Event, killed: list[int]) -> None:
    import psutil

    while not stop.is_set() and not killed:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or ())
            if "ray::_calibrate_shard" in cmdline:
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                return
        time.sleep(0.002)


def test_a_killed_worker_is_redone_and_the_bytes_stay(
    local_ray, small_shards, tmp_path, one_process
):
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_first_shard_worker, args=(stop, killed))
    watcher.start()
    try:
        result = _run(tmp_path / "ray", workers=2)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no shard worker was seen running"
    assert result == one_process


def test_ctrl_c_then_corrupt_checkpoint_then_resume(
    local_ray, small_shards, tmp_path, one_process, caplog
):
    folder = tmp_path / "ray"
    shards = distributed.checkpoint_folder(folder / "c.cache")

    def interrupt(phase: str, done: int, total: int | None) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(folder, workers=2, progress=interrupt)
    assert not (folder / "c.cache").exists() and not (folder / "s.npz").exists()
    kept = sorted(shards.glob("*.npz"))
    assert len(kept) == 3  # every finished shard, written atomically
    kept[0].write_bytes(b"PK\x03\x04 torn")  # a checkpoint that no longer loads
    seen: list[tuple[str, int, int | None]] = []
    with caplog.at_level(logging.WARNING):
        result = _run(folder, workers=2, progress=lambda *a: seen.append(a))
    assert result == one_process
    assert "computing that shard again" in caplog.text
    assert seen[0] == ("shards", 1, 8) and seen[-1] == ("shards", 8, 8)
    assert not shards.exists()


def test_errors_are_one_line(local_ray, tmp_path):
    from onnx2trt_lib.errors import UsageError

    with pytest.raises(UsageError, match="exact two-pass"):
        calibrate(
            SAMPLE / "digits.onnx",
            str(SAMPLE / "calib_list.txt"),
            preprocess=SAMPLE / "preprocess.json",
            mode="single-pass",
            workers=2,
        )
    with pytest.raises(UsageError, match="cannot"):
        calibrate(SAMPLE / "digits.onnx", (b for b in []), workers=2)


def test_workers_report_convergence_like_one_process(local_ray, small_shards, tmp_path):
    from click.testing import CliRunner

    from onnx2trt_lib.calib.convergence import convergence_report
    from onnx2trt_lib.cli.main import cli

    result = calibrate(
        SAMPLE / "digits.onnx",
        str(SAMPLE / "calib_list.txt"),
        preprocess=SAMPLE / "preprocess.json",
        workers=2,
        convergence=True,
    )
    # 8 shards of 8 samples: the 6 leading shards (48 samples) come nearest 80% of 64
    first = (SAMPLE / "calib_list.txt").read_text().splitlines()[:48]
    listing = tmp_path / "first.txt"
    listing.write_text("".join(f"{SAMPLE / line}\n" for line in first))
    early = calibrate(
        SAMPLE / "digits.onnx", str(listing), preprocess=SAMPLE / "preprocess.json"
    ).state
    for name, hist in early.histograms.items():  # one process's snapshot: at the final ranges
        hist.grow_to(result.state.histograms[name].range_max)
    expected = convergence_report(result.amax, early, 64, "entropy", {})
    assert expected is not None and expected["samples_before"] == 48
    assert result.convergence == expected
    args = ["calibrate", str(SAMPLE / "digits.onnx"), "-d", str(SAMPLE / "calib_list.txt")]
    args += ["-p", str(SAMPLE / "preprocess.json"), "-o", str(tmp_path / "cli.cache")]
    run = CliRunner().invoke(cli, [*args, "--workers", "2", "--convergence"])
    assert run.exit_code == 0, run.output
    assert "convergence: from 48 to 64 samples" in run.output
