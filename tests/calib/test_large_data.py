"""Large data sets in one process: an image list streams (nothing kept per sample), a seeded
subsample, and the convergence report."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.errors import UsageError


def _model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("large")
    Image.fromarray(data.astronaut()[::16, ::16]).save(folder / "a.png")  # 32x32
    Image.fromarray(data.coffee()[100:132, 200:232]).save(folder / "b.png")
    return _model(folder / "m.onnx"), folder


def _listing(folder: Path, lines: int) -> Path:
    path = folder / f"list{lines}.txt"
    path.write_text("a.png\nb.png\n" * (lines // 2))
    return path


def _peak(model: Path, listing: Path) -> int:
    tracemalloc.start()
    try:
        calibrate(model, str(listing), batch_size=64, preprocess={"scale": 1 / 255})
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_an_image_list_streams_with_nothing_kept_per_sample(setup):
    model, folder = setup
    small, large = _listing(folder, 200), _listing(folder, 1400)
    _peak(model, small)  # warm: numba, ORT, imports
    extra = _peak(model, large) - _peak(model, small)
    # one preprocessed sample is 12 KiB (3x32x32 float32) and its activations 16 KiB more;
    # what grows with the list is only its paths
    assert extra / 1200 < 1024, extra


def test_max_samples_is_a_seeded_reproducible_subset(setup):
    model, folder = setup
    listing = _listing(folder, 40)
    pre = {"scale": 1 / 255}
    first = calibrate(model, str(listing), preprocess=pre, max_samples=7, batch_size=3)
    again = calibrate(model, str(listing), preprocess=pre, max_samples=7, batch_size=5)
    assert first.num_samples == again.num_samples == 7 and first.amax == again.amax
    arrays = np.random.default_rng(1).standard_normal((50, 3, 32, 32)).astype(np.float32)
    arrays *= np.exp(np.random.default_rng(2).normal(0, 2, 50))[:, None, None, None]
    picked = calibrate(model, {"x": arrays}, max_samples=10, sample_seed=4)
    keep = np.sort(np.random.default_rng(4).choice(50, size=10, replace=False))
    assert picked.amax == calibrate(model, {"x": arrays[keep]}).amax
    assert picked.amax != calibrate(model, {"x": arrays}, max_samples=10, sample_seed=5).amax
    assert calibrate(model, {"x": arrays}, max_samples=99).num_samples == 50
    with pytest.raises(UsageError, match="max-samples needs"):
        calibrate(model, [{"x": arrays[:2]}], max_samples=1)


def test_convergence_reports_the_threshold_moves_of_the_last_fifth(setup):
    model, _ = setup
    rng = np.random.default_rng(3)
    arrays = rng.standard_normal((40, 3, 32, 32)).astype(np.float32)
    arrays[-4:] *= 50  # the last fifth holds outliers: the input's threshold moves
    result = calibrate(model, {"x": arrays}, batch_size=4, convergence=True, mode="single-pass")
    report = result.convergence
    assert report["samples_before"] == 32 and report["samples_after"] == 40
    before = calibrate(model, {"x": arrays[:32]}, batch_size=4, mode="single-pass").amax
    moves = {n: abs(result.amax[n] - before[n]) / result.amax[n] for n in result.amax}
    assert report["max_relative_move"] == max(moves.values()) > 0.5
    assert set(report["moved_most"]) == set(sorted(moves, key=lambda n: -moves[n])[:5])
    assert calibrate(model, {"x": arrays}, batch_size=4).convergence is None  # not asked
