"""Calibration data sources: lists, folders, globs, arrays, iterables; shapes; bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from onnx2trt_lib.calib.dataset import (
    ArraySource,
    ImageSource,
    InputSpec,
    IterableSource,
    open_source,
    parse_shapes,
    resolve_calibration_shapes,
)
from onnx2trt_lib.calib.preprocess import Preprocess
from onnx2trt_lib.errors import CalibrationError, UsageError


def test_parse_shapes_trtexec_style():
    assert parse_shapes("x:1x3x640x640") == {"x": (1, 3, 640, 640)}
    assert parse_shapes("a:1x3,b:2x4X5") == {"a": (1, 3), "b": (2, 4, 5)}
    assert parse_shapes(["ns:in:0:1x2", "y:7"]) == {"ns:in:0": (1, 2), "y": (7,)}
    assert parse_shapes(None) == {}
    for bad in ("x", "x:1xax3", "x:0x3", ":1x2", "x:"):
        with pytest.raises(UsageError):
            parse_shapes(bad)
    with pytest.raises(UsageError, match="twice"):
        parse_shapes("x:1x2,x:1x3")


def test_resolve_shapes_needs_shape_for_dynamic_dims():
    dynamic = [InputSpec("x", (None, 3, None, None), np.dtype(np.float32))]
    with pytest.raises(UsageError, match=r"--shape x:1x3x640x640"):
        resolve_calibration_shapes(dynamic, {}, None)
    assert resolve_calibration_shapes(dynamic, {"x": (1, 3, 32, 48)}, None) == {"x": (1, 3, 32, 48)}
    assert resolve_calibration_shapes(dynamic, {"x": (1, 3, 32, 48)}, 4) == {"x": (4, 3, 32, 48)}
    batch_only = [InputSpec("x", (None, 3, 8, 8), np.dtype(np.float32))]
    assert resolve_calibration_shapes(batch_only, {}, 2) == {"x": (2, 3, 8, 8)}
    static = [InputSpec("x", (1, 3, 8, 8), np.dtype(np.float32))]
    with pytest.raises(UsageError, match="axis 1"):
        resolve_calibration_shapes(static, {"x": (1, 1, 8, 8)}, None)
    with pytest.raises(UsageError, match="fixed batch of 1"):
        resolve_calibration_shapes(static, {}, 4)
    with pytest.raises(UsageError, match="model inputs are x"):
        resolve_calibration_shapes(static, {"y": (1,)}, None)
    with pytest.raises(UsageError, match="dims"):
        resolve_calibration_shapes(static, {"x": (1, 3, 8)}, None)


def test_list_file_resolves_relative_paths_against_its_folder(image_dir, tmp_path, monkeypatch):
    sub = tmp_path / "lists"
    sub.mkdir()
    listing = sub / "calib.txt"
    listing.write_text(f"# comment\n../imgs/a.jpg\n\n{image_dir / 'text.png'}\n")
    (tmp_path / "imgs").mkdir()
    shutil.copy(image_dir / "sklearn_0.jpg", tmp_path / "imgs" / "a.jpg")
    monkeypatch.chdir(image_dir)  # the current folder must not matter
    source = open_source(listing)
    assert isinstance(source, ImageSource)
    assert [p.name for p in source.paths] == ["a.jpg", "text.png"]


def test_folder_is_recursive_and_glob_works(image_dir, tmp_path):
    nested = tmp_path / "root" / "deep" / "deeper"
    nested.mkdir(parents=True)
    shutil.copy(image_dir / "text.png", nested / "t.png")
    shutil.copy(image_dir / "sklearn_1.jpg", tmp_path / "root" / "f.JPG")
    (tmp_path / "root" / "notes.txt").write_text("not an image")
    assert sorted(p.name for p in open_source(tmp_path / "root").paths) == ["f.JPG", "t.png"]
    globbed = open_source(str(image_dir / "sklearn_*.jpg"))
    assert [p.name for p in globbed.paths] == ["sklearn_0.jpg", "sklearn_1.jpg"]


def test_image_batches_are_preprocessed_and_stacked(image_dir):
    source = open_source(image_dir, preprocess=Preprocess())
    shapes = {"x": (2, 3, 16, 24)}
    batches = list(source.batches(shapes))
    assert len(source.paths) == 6 and len(batches) == 3 == source.num_batches(shapes)
    for batch in batches:
        assert batch["x"].shape == (2, 3, 16, 24) and batch["x"].dtype == np.float32
        assert 0 <= batch["x"].min() and batch["x"].max() <= 1
    expected_first = Preprocess(size=(16, 24)).apply(Image.open(source.paths[0]))
    np.testing.assert_array_equal(batches[0]["x"][0], expected_first)
    # a remainder that does not fill a batch is dropped (with a warning)
    assert len(list(source.batches({"x": (4, 3, 16, 24)}))) == 1


def test_wrong_channel_count_is_explained(image_dir):
    source = open_source(image_dir)
    with pytest.raises(CalibrationError, match="wants 1 channels but preprocessing gives 3"):
        next(source.batches({"x": (1, 1, 16, 16)}))
    gray = open_source(image_dir, preprocess=Preprocess(color="GRAY", mean=(0,), std=(1,)))
    assert next(gray.batches({"x": (1, 1, 16, 16)}))["x"].shape == (1, 1, 16, 16)
    with pytest.raises(UsageError, match="exactly one input"):
        next(source.batches({"a": (1, 3, 8, 8), "b": (1, 3, 8, 8)}))


def test_missing_and_unreadable_images_are_all_named(image_dir, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not really a jpeg")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image_dir / 'text.png'}\ngone.png\nbroken.jpg\n")
    with pytest.raises(CalibrationError) as info:
        open_source(listing)
    message = str(info.value)
    assert "2 of 3 images cannot be read" in message
    assert str(tmp_path / "gone.png") in message and "(missing)" in message
    assert str(tmp_path / "broken.jpg") in message and "\n" not in message


def test_truncated_image_fails_at_decode_naming_it(image_dir, tmp_path):
    data = (image_dir / "sklearn_0.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    source = open_source(tmp_path / "cut.jpg")
    with pytest.raises(CalibrationError, match="cut.jpg: cannot decode"):
        next(source.batches({"x": (1, 3, 8, 8)}))


def test_empty_inputs(tmp_path):
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(CalibrationError, match="image list is empty"):
        open_source(tmp_path / "empty.txt")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CalibrationError, match="no images found"):
        open_source(tmp_path / "emptydir")
    with pytest.raises(CalibrationError, match="no such file"):
        open_source(tmp_path / "nothing-here")
    with pytest.raises(CalibrationError, match="no images found"):
        open_source(str(tmp_path / "*.png"))


def test_npy_and_npz_sources(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", samples)
    source = open_source(tmp_path / "x.npy")
    assert isinstance(source, ArraySource)
    batches = list(source.batches({"x": (2, 3, 4, 4)}))
    assert len(batches) == 2
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), samples[:4])
    np.savez(tmp_path / "two.npz", a=samples, b=samples[:, 0])
    two = open_source(tmp_path / "two.npz")
    first = next(two.batches({"a": (5, 3, 4, 4), "b": (5, 4, 4)}))
    np.testing.assert_array_equal(first["b"], samples[:, 0])
    with pytest.raises(CalibrationError, match="no array for model input"):
        next(two.batches({"a": (1, 3, 4, 4), "c": (1, 4, 4)}))
    with pytest.raises(CalibrationError, match="per sample"):
        next(source.batches({"x": (1, 3, 5, 5)}))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(CalibrationError, match="not a readable"):
        open_source(tmp_path / "bad.npy")


def test_iterables_and_fingerprints(image_dir, tmp_path):
    batches = [{"x": np.ones((1, 2), np.float32)}, {"x": np.zeros((1, 2), np.float32)}]
    listed = open_source(batches)
    assert isinstance(listed, IterableSource) and listed.rereadable and listed.fingerprint()
    generator = open_source(b for b in batches)
    assert not generator.rereadable and generator.fingerprint() is None
    assert listed.fingerprint() != open_source(batches[::-1]).fingerprint()
    # image fingerprints follow content, not names or times
    shutil.copytree(image_dir, tmp_path / "copy")
    assert open_source(tmp_path / "copy").fingerprint() == open_source(image_dir).fingerprint()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "copy" / "text.png")
    assert open_source(tmp_path / "copy").fingerprint() != open_source(image_dir).fingerprint()
