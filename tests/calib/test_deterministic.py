"""Exact (two-pass) calibration is a function of the samples alone: the cache, ranges JSON and
saved state are the same bytes whatever the batch size, the order of the samples and the split
into shards merged with add_states / --add-state."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.state import CalibrationState
from onnx2trt_lib.cli.main import cli

SAMPLES = 23


def _model() -> onnx.ModelProto:
    """x -> Conv -> Sigmoid*x (swish) -> Conv -> y: values of many scales, negatives and tails."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((3, 4, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"]),
        helper.make_node("Mul", ["c1", "s1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _samples() -> np.ndarray:
    rng = np.random.default_rng(1)
    scales = np.exp(rng.normal(0.0, 1.5, SAMPLES)).astype(np.float32)  # the max sits in one sample
    return (rng.standard_normal((SAMPLES, 2, 5, 5)) * scales[:, None, None, None]).astype(
        np.float32
    )


def _digests(folder: Path, suffix: str) -> dict[str, str]:
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("c.cache", "r.json", f"s{suffix}")
    }


_REFERENCE: dict[str, dict[str, str]] = {}


def _reference(tmp_path_factory, suffix: str) -> dict[str, str]:
    """One run over every sample in order, batch 4."""
    if suffix not in _REFERENCE:
        out = tmp_path_factory.mktemp("reference")
        calibrate(
            _model(),
            {"x": _samples()},
            batch_size=4,
            output=out / "c.cache",
            ranges_path=out / "r.json",
            save_state=out / f"s{suffix}",
        )
        _REFERENCE[suffix] = _digests(out, suffix)
    return _REFERENCE[suffix]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    shards=st.integers(1, 4),
    suffix=st.sampled_from([".npz", ".json"]),
)
def test_bytes_do_not_depend_on_batch_size_order_or_split(tmp_path_factory, seed, shards, suffix):
    rng = np.random.default_rng(seed)
    data = _samples()[rng.permutation(SAMPLES)]
    cuts = sorted(rng.choice(np.arange(1, SAMPLES), size=shards - 1, replace=False).tolist())
    parts = np.split(data, cuts)
    out = tmp_path_factory.mktemp("split")
    previous: list[Path] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        state = out / (f"s{suffix}" if last else f"part{index}{suffix}")
        calibrate(
            _model(),
            {"x": part},
            batch_size=int(rng.integers(1, 10)),  # also larger than the part: one short batch
            output=out / "c.cache" if last else None,
            ranges_path=out / "r.json" if last else None,
            save_state=state,
            add_states=previous,
        )
        previous = [state]
    assert _digests(out, suffix) == _reference(tmp_path_factory, suffix)


def test_saved_state_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    state = calibrate(_model(), {"x": _samples()}, batch_size=5).state
    state.save(tmp_path / "a.npz")
    later = time.localtime(time.time() + 3 * 86400)
    monkeypatch.setattr(time, "localtime", lambda *_: later)  # zip entries stamp localtime()
    state.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert CalibrationState.load(tmp_path / "b.npz").histograms == state.histograms


def test_single_pass_says_it_depends_on_the_order():
    data = _samples()
    result = calibrate(_model(), {"x": data}, batch_size=4, mode="single-pass")
    assert result.to_dict()["order_independent"] is False
    exact = calibrate(_model(), {"x": data}, batch_size=4)
    assert exact.mode == "two-pass" and exact.to_dict()["order_independent"] is True
    # the claim is true: the first batch sets the single-pass range, so reversing the data
    # changes the histograms, where the exact mode's do not change
    flipped = calibrate(_model(), {"x": data[::-1].copy()}, batch_size=4, mode="single-pass")
    assert flipped.state.histograms != result.state.histograms
    assert calibrate(_model(), {"x": data[::-1].copy()}, batch_size=4).state.histograms == (
        exact.state.histograms
    )


# ------------------------------------------------------------------ a real model, real images


@pytest.fixture(scope="module")
def photo_list(tmp_path_factory) -> Path:
    """40 crops of scikit-image's photographs (of several sizes), listed in a .txt."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(2)
    photos = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.immunohistochemistry(),
    ]
    paths = []
    for index in range(40):
        photo = photos[index % len(photos)]
        h, w = int(rng.integers(40, 120)), int(rng.integers(100, 300))
        y, x = int(rng.integers(0, photo.shape[0] - h)), int(rng.integers(0, photo.shape[1] - w))
        path = folder / f"crop_{index:02d}.png"
        Image.fromarray(photo[y : y + h, x : x + w]).save(path)
        paths.append(str(path))
    listing = folder / "all.txt"
    listing.write_text("\n".join(paths) + "\n")
    return listing


@pytest.mark.slow
def test_pp_ocr_cls_bytes_across_batches_order_and_shards(photo_list, tmp_path):
    from .conftest import _rapidocr_model

    model = _rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    common = ["--shape", "x:1x3x48x192", "-p", "paddleocr", "-q"]
    runner = CliRunner()

    def run(data: Path, tag: str, batch: int, *more: str) -> None:
        args = ["calibrate", str(model), "-d", str(data), "-b", str(batch), *common]
        args += ["-o", str(tmp_path / f"{tag}.cache"), "--ranges", str(tmp_path / f"{tag}.json")]
        args += ["--save-state", str(tmp_path / f"{tag}.npz"), *more]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output

    paths = photo_list.read_text().split()
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text("\n".join(np.random.default_rng(3).permutation(paths)) + "\n")
    for batch in (1, 7, 32):
        run(photo_list, f"b{batch}", batch)
    run(shuffled, "shuffled", 7)
    previous: list[str] = []
    for index, part in enumerate(np.array_split(np.array(paths[::-1]), 3)):
        listing = tmp_path / f"shard{index}.txt"
        listing.write_text("\n".join(part) + "\n")
        run(listing, f"shard{index}", (5, 32, 3)[index], *previous)
        previous = ["--add-state", str(tmp_path / f"shard{index}.npz")]

    def digest(tag: str) -> tuple[str, ...]:
        return tuple(
            hashlib.sha256((tmp_path / f"{tag}{ext}").read_bytes()).hexdigest()
            for ext in (".cache", ".json", ".npz")
        )

    tags = ["b1", "b7", "b32", "shuffled", "shard2"]
    assert len({digest(tag) for tag in tags}) == 1, {tag: digest(tag) for tag in tags}
    ranges = json.loads((tmp_path / "b1.json").read_text())
    assert ranges["mode"] == "two-pass" and len(ranges["tensors"]) > 100
    assert CalibrationState.load(tmp_path / "shard2.npz").num_samples == 40


@pytest.mark.parametrize(("cpus", "split"), [(1, (1, 1)), (2, (1, 1)), (3, (2, 1)), (16, (8, 8))])
def test_overlap_shares_the_cpus_between_ort_and_binning(monkeypatch, cpus, split):
    from onnx2trt_lib.calib import _threads

    monkeypatch.setenv("ONNX2TRT_CALIB_THREADS", str(cpus))
    assert _threads.overlap_threads() == split
    monkeypatch.delenv("ONNX2TRT_CALIB_THREADS")
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(_threads, "physical_cores", lambda: 2)  # hyperthreads: ORT keeps cores
    assert _threads.overlap_threads() == (2, 2)


def test_overlap_gives_the_same_bytes(tmp_path):
    for overlap in (False, True):
        calibrate(_model(), {"x": _samples()}, batch_size=3, overlap=overlap).state.save(
            tmp_path / f"{overlap}.npz"
        )
    assert (tmp_path / "False.npz").read_bytes() == (tmp_path / "True.npz").read_bytes()


@settings(max_examples=200, deadline=None)
@given(samples=st.integers(1, 5000), workers=st.integers(1, 64), unit=st.sampled_from([1, 1, 3, 8]))
def test_shards_cover_the_data_in_whole_batches(samples, workers, unit):
    from onnx2trt_lib.calib.distributed import SHARD_SIZE, plan_shards

    shards = plan_shards(samples, workers, {"k": 1}, unit)
    assert shards[0].start == 0 and shards[-1].stop == samples
    assert all(a.stop == b.start for a, b in zip(shards, shards[1:], strict=False))
    assert all(s.start % unit == 0 and s.stop > s.start for s in shards)
    # every shard but the last holds whole batches; the last also what one process drops
    assert all((s.stop - s.start) % unit == 0 for s in shards[:-1])
    assert all(s.stop - s.start <= SHARD_SIZE + unit for s in shards)
    assert len(shards) >= min(workers, samples // unit)
    assert len({s.name for s in shards}) == len(shards)
