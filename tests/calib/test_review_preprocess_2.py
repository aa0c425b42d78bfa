"""Review of preprocessing and data sources against independent references (Pillow, PaddleOCR's code)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PIL import Image

from onnx2trt_lib.calib.dataset import (
    InputSpec,
    open_source,
    parse_shapes,
    read_image_list,
    resolve_calibration_shapes,
)
from onnx2trt_lib.calib.preprocess import (
    PRESETS,
    Preprocess,
    load_preprocess,
    preprocess_from_dict,
)
from onnx2trt_lib.errors import CalibrationError, UsageError


def _paddle_rec_reference(image: Image.Image, height: int, width: int) -> np.ndarray:
    """PaddleOCR's resize_norm_img (ppocr/data/imaug/rec_img_aug.py), with Pillow's bilinear resize."""
    w, h = image.size
    ratio = w / float(h)
    resized_w = min(math.ceil(height * ratio), width)
    resized = np.asarray(image.resize((resized_w, height), Image.Resampling.BILINEAR), np.float32)
    resized = resized[:, :, ::-1].transpose(2, 0, 1) / 255  # cv2.imread gives BGR
    resized = (resized - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = resized
    return out


@pytest.mark.parametrize(
    ("image_wh", "target_hw"),
    [
        ((400, 32), (48, 320)),
        ((170, 32), (48, 160)),
        ((31, 32), (48, 320)),
        ((1, 1), (9, 7)),
        ((2000, 2), (48, 320)),
        ((3, 500), (32, 100)),
        ((100, 32), (48, 320)),
    ],
)
def test_paddleocr_rec_preset_matches_paddleocr_resize_norm_img(image_wh, target_hw):
    rng = np.random.default_rng(sum(image_wh))
    image = Image.fromarray(rng.integers(0, 256, (image_wh[1], image_wh[0], 3), dtype=np.uint8))
    got = PRESETS["paddleocr-rec"].with_size(target_hw).apply(image)
    np.testing.assert_allclose(got, _paddle_rec_reference(image, *target_hw), atol=1e-5)


def test_fit_height_gray_pads_right_only():
    image = Image.new("L", (10, 5), 200)  # 2:1 into 8x32 -> 16x8, padded right
    out = Preprocess(
        size=(8, 32), resize="fit-height", color="GRAY", scale=1.0, pad_value=7, layout="NHWC"
    ).apply(image)
    assert out.shape == (8, 32, 1)
    assert np.all(out[:, :16] == 200) and np.all(out[:, 16:] == 7)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"scale": "x"}, "scale"),
        ({"scale": None}, "scale"),
        ({"scale": "0.5"}, "scale"),
        ({"scale": 0}, "scale"),
        ({"scale": float("inf")}, "scale"),
        ({"pad_value": "x"}, "pad_value"),
        ({"pad_value": None}, "pad_value"),
        ({"preset": ["yolo"]}, "unknown preset"),
        ({"size": [1e400, 8]}, "size"),
        ({"size": [224.5, 224]}, "size"),
        ({"size": [True, 8]}, "size"),
        ({"size": 224}, "size"),
        ({"std": [float("nan")]}, "std"),
        ({"mean": [float("nan")]}, "mean"),
        ({"mean": ["0.1", "0.2", "0.3"]}, "mean"),
        ({"mean": "0.5"}, "mean"),
    ],
)
def test_bad_values_are_one_line_usage_errors(spec, match):
    with pytest.raises(UsageError, match=match) as info:
        preprocess_from_dict(spec)
    assert "\n" not in str(info.value)


def test_bad_scale_in_config_file_fails_at_load_not_at_first_image(tmp_path):
    (tmp_path / "p.json").write_text('{"preset": "yolo", "scale": "1/255"}')
    with pytest.raises(UsageError, match="scale"):
        load_preprocess(tmp_path / "p.json")


def test_numbers_and_numpy_values_still_accepted():
    pre = preprocess_from_dict({"mean": 0.5, "std": 0.25, "size": [48.0, 320], "pad_value": 114})
    assert (
        pre.mean == (0.5,)
        and pre.std == (0.25,)
        and pre.size == (48, 320)
        and pre.pad_value == 114.0
    )
    pre = Preprocess(
        size=np.array([4, 6]), mean=np.array([0.1, 0.2, 0.3], np.float32), scale=np.float32(1.0)
    )
    assert pre.size == (4, 6) and len(pre.mean) == 3 and isinstance(pre.scale, float)


def test_lab_tiff_converts_to_gray(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8))
    rgb.convert("LAB").save(tmp_path / "lab.tif")
    with Image.open(tmp_path / "lab.tif") as image:
        image.load()
        assert image.mode == "LAB"
        out = Preprocess(size=(6, 6), color="GRAY", scale=1.0).apply(image)
        np.testing.assert_array_equal(
            out[0], np.asarray(image.convert("RGB").convert("L"), np.float32)
        )


def test_trtexec_quoted_shape_names():
    assert parse_shapes("'input:0':1x3x8x8,y:2") == {"input:0": (1, 3, 8, 8), "y": (2,)}
    spec = InputSpec("input:0", (None, 3, 8, 8), np.dtype(np.float32))
    assert resolve_calibration_shapes([spec], parse_shapes("'input:0':2x3x8x8"), None) == {
        "input:0": (2, 3, 8, 8)
    }


@pytest.mark.skipif(os.name != "posix", reason="non-UTF-8 file names are a POSIX thing")
def test_image_list_with_non_utf8_names(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")
    try:
        Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / name, "PNG")
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    (tmp_path / "list.txt").write_bytes(b"# made with ls\n\ncaf\xe9.png\r\n")
    assert read_image_list(tmp_path / "list.txt") == [tmp_path / name]
    source = open_source(tmp_path / "list.txt", preprocess=Preprocess())
    batch = next(source.batches({"x": (1, 3, 4, 4)}))
    assert batch["x"].shape == (1, 3, 4, 4)


def test_binary_file_is_still_not_a_list(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x08\x07\x00\xff\xfe binary")
    with pytest.raises(CalibrationError, match="not a text list"):
        open_source(tmp_path / "model.bin")


def test_in_memory_scalar_array_is_one_line_error():
    with pytest.raises(CalibrationError, match="'x' is a single number"):
        open_source({"x": np.float32(1.0)})
    with pytest.raises(CalibrationError, match="the array is a single number"):
        open_source(np.array(1.0))
