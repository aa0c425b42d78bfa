"""Declared preprocessing against a plain numpy statement of the same arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from onnx2trt_lib.calib.preprocess import (
    PRESETS,
    Preprocess,
    load_preprocess,
    preprocess_from_dict,
    to_mode,
)
from onnx2trt_lib.errors import UsageError


def _reference(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Same-size input (resize is the identity): the formula of the docstring, literally."""
    x = pixels.astype(np.float64)
    if pre.color == "BGR":
        x = x[..., ::-1]
    if pre.color == "GRAY":
        x = x[..., None]
    out = (x * pre.scale - np.asarray(pre.mean)) / np.asarray(pre.std)
    return out.transpose(2, 0, 1) if pre.layout == "NCHW" else out


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    color=st.sampled_from(["RGB", "BGR", "GRAY"]),
    layout=st.sampled_from(["NCHW", "NHWC"]),
    mean=st.floats(-2, 2),
    std=st.floats(0.1, 3),
)
def test_normalisation_matches_the_formula(h, w, seed, color, layout, mean, std):
    rng = np.random.default_rng(seed)
    channels = 1 if color == "GRAY" else 3
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if color == "GRAY":
        image = image.convert("L")
        pixels = np.asarray(image)
    pre = Preprocess(
        size=(h, w), color=color, layout=layout, mean=(mean,) * channels, std=(std,) * channels
    )
    out = pre.apply(image)
    assert out.dtype == np.float32 and out.shape == pre.sample_shape()
    np.testing.assert_allclose(out, _reference(pixels, pre), rtol=1e-5, atol=1e-5)


def test_letterbox_keeps_aspect_and_pads():
    image = Image.new("RGB", (40, 20), (255, 0, 0))  # 2:1 into 32x32 -> 32x16 centred
    out = Preprocess(
        size=(32, 32), resize="letterbox", pad_value=114, scale=1.0, layout="NHWC"
    ).apply(image)
    assert out.shape == (32, 32, 3)
    assert np.all(out[:8] == 114) and np.all(out[24:] == 114)
    np.testing.assert_array_equal(out[8:24, :, 0], 255)
    top_left = Preprocess(
        size=(32, 32), resize="letterbox-topleft", pad_value=0, scale=1.0, layout="NHWC"
    ).apply(image)
    np.testing.assert_array_equal(top_left[:16, :, 0], 255)
    assert np.all(top_left[16:] == 0)


def test_stretch_resizes_to_size_and_dtype():
    image = Image.new("RGB", (50, 30), (10, 20, 30))
    out = Preprocess(size=(8, 16), dtype="float16").apply(image)
    assert out.shape == (3, 8, 16) and out.dtype == np.float16
    np.testing.assert_allclose(out[:, 0, 0], np.array([10, 20, 30]) / 255, rtol=1e-3)
    raw = Preprocess(size=(8, 16), dtype="uint8", layout="NHWC").apply(image)
    assert raw.dtype == np.uint8 and raw[0, 0].tolist() == [10, 20, 30]


def test_mode_conversions():
    gray = Image.fromarray(np.full((4, 4), 77, np.uint8))
    assert np.asarray(to_mode(gray, "RGB")).tolist()[0][0] == [77, 77, 77]
    rgba = Image.fromarray(np.array([[[200, 0, 0, 0], [0, 0, 200, 255]]], np.uint8), mode="RGBA")
    assert np.asarray(to_mode(rgba, "RGB")).tolist() == [
        [[255, 255, 255], [0, 0, 200]]
    ]  # transparent -> white
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    assert np.asarray(to_mode(cmyk, "RGB"))[0, 0].tolist() == [255, 0, 0]
    deep = Image.fromarray(
        np.array([[0, 1000], [32896, 65535]], np.uint16)
    )  # 16 bits: 0..65535 -> 0..255
    assert np.asarray(to_mode(deep, "L")).tolist() == [[0, 4], [128, 255]]
    dark = Image.fromarray(
        np.full((2, 2), 110, np.uint16)
    )  # a near-black 16-bit image stays near black
    assert np.asarray(to_mode(dark, "L")).max() == 0
    floats = Image.fromarray(
        np.array([[0.5, 1.0], [1.5, 2.5]], np.float32)
    )  # float: range unknown, stretched
    assert np.asarray(to_mode(floats, "L")).tolist() == [[0, 64], [128, 255]]
    rgb = Image.new("RGB", (2, 2), (30, 60, 90))
    assert np.asarray(to_mode(rgb, "L"))[0, 0] == np.asarray(rgb.convert("L"))[0, 0]


def test_presets_and_config_files(tmp_path):
    assert set(PRESETS) >= {"imagenet", "yolo", "paddleocr"}
    assert load_preprocess("yolo").resize == "letterbox"
    assert load_preprocess(None) is None
    (tmp_path / "p.json").write_text(
        json.dumps({"preset": "imagenet", "color": "BGR", "size": [32, 48]})
    )
    pre = load_preprocess(tmp_path / "p.json")
    assert pre.color == "BGR" and pre.size == (32, 48) and pre.mean == PRESETS["imagenet"].mean
    (tmp_path / "p.toml").write_text('preset = "paddleocr"\nlayout = "NHWC"\n')
    assert load_preprocess(tmp_path / "p.toml").layout == "NHWC"
    assert preprocess_from_dict(pre.to_dict()) == pre  # to_dict round-trips


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"colour": "RGB"}, "unknown key"),
        ({"preset": "nope"}, "unknown preset"),
        ({"color": "RGBA"}, "color"),
        ({"std": [1, 0, 1]}, "zero"),
        ({"mean": [1, 2]}, "channels"),
        ({"size": [0, 3]}, "size"),
        ({"resize": "crop"}, "resize"),
    ],
)
def test_bad_configs_are_one_line_usage_errors(spec, match):
    with pytest.raises(UsageError, match=match) as info:
        preprocess_from_dict(spec)
    assert "\n" not in str(info.value)


def test_bad_config_files(tmp_path):
    with pytest.raises(UsageError, match="neither a preset"):
        load_preprocess("imagenett")
    with pytest.raises(UsageError, match="no such file"):
        load_preprocess(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_preprocess(tmp_path / "bad.json")


def _torchvision_eval(image: Image.Image, crop: int) -> np.ndarray:
    """torchvision's documented ImageNet evaluation, written out: Resize(crop / 0.875) on the
    shorter side (long side truncated), bilinear via PIL, then CenterCrop(crop) with rounded offsets."""
    short = round(crop / 0.875)
    w, h = image.size
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    resized = image.resize(size, Image.Resampling.BILINEAR)
    top, left = int(round((size[1] - crop) / 2.0)), int(round((size[0] - crop) / 2.0))
    return np.asarray(resized.crop((left, top, left + crop, top + crop)), dtype=np.float64)


@pytest.mark.parametrize(
    ("w", "h"), [(1, 1), (300, 200), (200, 300), (224, 224), (640, 480), (17, 901), (257, 256)]
)
def test_imagenet_preset_is_torchvision_resize_and_center_crop(w, h):
    rng = np.random.default_rng(w * 1000 + h)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    pre = PRESETS["imagenet"].with_size((224, 224))
    expected = (_torchvision_eval(image, 224) / 255.0 - np.asarray(pre.mean)) / np.asarray(pre.std)
    np.testing.assert_allclose(pre.apply(image), expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_center_crop_covers_a_non_square_size():
    image = Image.fromarray(
        np.arange(300 * 200 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    )
    out = Preprocess(resize="center-crop", size=(64, 160)).apply(image)
    assert out.shape == (3, 64, 160) and np.isfinite(out).all()
