"""Edge cases of calibration inputs and cache reuse found in review: each was a wrong result or a traceback."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.dataset import IterableSource, load_image, open_source
from onnx2trt_lib.calib.preprocess import Preprocess
from onnx2trt_lib.calib.ranges import read_ranges
from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.errors import CacheFormatError, CalibrationError, Onnx2TrtError, UsageError


def conv_model(scale: float = 1.0) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv -> Relu -> y; `scale` multiplies the weights."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32) * scale
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save_external(model: onnx.ModelProto, path) -> None:
    """Weights in PATH.data at offset 0, so only that file changes when the weights do."""
    (path.parent / (path.name + ".data")).unlink(missing_ok=True)  # onnx would append to it
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )


@pytest.fixture
def samples(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32))
    return path


def test_changed_external_weights_are_a_cache_miss(tmp_path, samples):
    model = tmp_path / "ext.onnx"
    save_external(conv_model(), model)
    first = calibrate(model, samples, batch_size=2, output=tmp_path / "c.cache")
    onnx_bytes = model.read_bytes()
    save_external(conv_model(scale=10.0), model)  # weights x10 in ext.onnx.data
    assert model.read_bytes() == onnx_bytes
    again = calibrate(model, samples, batch_size=2, output=tmp_path / "c.cache")
    assert not again.cache_hit and again.amax["c"] > 5 * first.amax["c"]


def test_a_hit_needs_the_very_ranges_and_state_files_written_with_the_cache(tmp_path, samples):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(), model)
    args = dict(batch_size=2, ranges_path=tmp_path / "r.json")
    calibrate(model, samples, method="max", output=tmp_path / "a.cache", **args)
    calibrate(
        model, samples, method="entropy", output=tmp_path / "b.cache", **args
    )  # r.json now holds entropy
    again = calibrate(model, samples, method="max", output=tmp_path / "a.cache", **args)
    assert not again.cache_hit
    assert json.loads((tmp_path / "r.json").read_text())["method"] == "max"
    assert calibrate(model, samples, method="max", output=tmp_path / "a.cache", **args).cache_hit

    state = tmp_path / "s.npz"
    calibrate(model, samples, batch_size=2, output=tmp_path / "s.cache", save_state=state)
    assert calibrate(
        model, samples, batch_size=2, output=tmp_path / "s.cache", save_state=state
    ).cache_hit
    state.unlink()
    rerun = calibrate(model, samples, batch_size=2, output=tmp_path / "s.cache", save_state=state)
    assert not rerun.cache_hit and rerun.state_path == state and state.is_file()


def test_outputs_never_overwrite_images_external_data_or_each_other(tmp_path, samples):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for index in range(2):
        Image.new("RGB", (8, 8), (40 * index, 90, 200)).save(folder / f"i{index}.png")
    before = (folder / "i0.png").read_bytes()
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(), model)
    with pytest.raises(Onnx2TrtError, match="calibration image"):
        calibrate(model, folder, output=folder / "i0.png")
    assert (folder / "i0.png").read_bytes() == before
    ext = tmp_path / "ext.onnx"
    save_external(conv_model(), ext)
    data = (tmp_path / "ext.onnx.data").read_bytes()
    with pytest.raises(Onnx2TrtError, match="same file as input"):
        calibrate(ext, samples, batch_size=2, output=tmp_path / "ext.onnx.data")
    assert (tmp_path / "ext.onnx.data").read_bytes() == data
    with pytest.raises(UsageError, match="same file"):
        calibrate(
            model,
            samples,
            batch_size=2,
            output=tmp_path / "sc.cache",
            ranges_path=tmp_path / "sc.cache.calib.json",
        )
    assert not (tmp_path / "sc.cache").exists()


def test_bad_paths_and_arrays_get_one_line_errors(tmp_path):
    with pytest.raises(CalibrationError, match="path is empty"):
        open_source("")
    with pytest.raises(CalibrationError, match="too long"):
        open_source(str(tmp_path / ("q" * 300)))
    np.savez(tmp_path / "scalar.npz", x=np.float32(1))
    with pytest.raises(CalibrationError, match="'x' is a single number"):
        open_source(tmp_path / "scalar.npz")
    with pytest.raises(CalibrationError, match="item 0 is ndarray"):
        IterableSource([np.zeros((1, 3, 8, 8))]).fingerprint()


def test_cli_too_long_path_is_one_line(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(), model)
    result = CliRunner().invoke(
        cli, ["calibrate", str(model), "--data", "q" * 300, "-o", str(tmp_path / "c.cache")]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "too long" in result.output and len(result.output.strip().splitlines()) == 1


def test_image_list_with_byte_order_mark(tmp_path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_bytes(b"\xef\xbb\xbfa.png\n")
    assert open_source(tmp_path / "list.txt").paths == [tmp_path / "a.png"]


def test_exif_rotated_photo_is_read_upright(tmp_path):
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, :16] = 255  # stored: left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the viewer's top row is the stored left column
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=100)
    upright = np.asarray(load_image(tmp_path / "r.jpg"))
    assert upright.shape == (32, 16, 3)
    assert upright[:16].mean() > 250 and upright[17:].mean() < 5  # white on top, as viewers show it


def test_gray_needs_no_mean_and_std():
    out = Preprocess(size=(4, 4), color="GRAY").apply(Image.new("L", (4, 4), 51))
    assert out.shape == (1, 4, 4) and np.allclose(out, 0.2)


def test_ranges_with_a_huge_integer_amax_are_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(
        '{"format": "onnx2trt-ranges/1", "tensors": {"x": {"amax": ' + "9" * 400 + "}}}"
    )
    with pytest.raises(CacheFormatError, match="no valid amax"):
        read_ranges(path)


def test_folder_follows_symlinked_subfolders_once(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8), (index, 0, 0)).save(real / f"r{index}.png")
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(data / "own.png")
    (data / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(data, target_is_directory=True)  # a cycle back up
    names = sorted(p.name for p in open_source(data).paths)
    assert names == ["own.png", "r0.png", "r1.png", "r2.png"]
