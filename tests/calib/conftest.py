"""Real models and real images for calibration tests (all from installed wheels or drawn here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw


def _rapidocr_model(name: str) -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("rapidocr-onnxruntime is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        pytest.skip(f"{path} not in the rapidocr wheel")
    return path


@pytest.fixture(scope="session")
def det_model() -> Path:
    """PP-OCRv4 text detector (dynamic N,H,W), as shipped in rapidocr-onnxruntime."""
    return _rapidocr_model("ch_PP-OCRv4_det_infer.onnx")


@pytest.fixture(scope="session")
def rec_model() -> Path:
    return _rapidocr_model("ch_PP-OCRv4_rec_infer.onnx")


def render_text(text: str, size: tuple[int, int] = (160, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(180, 256, 3)))
    draw = ImageDraw.Draw(image)
    draw.text((6, size[1] // 3), text, fill=tuple(int(v) for v in rng.integers(0, 80, 3)))
    return image


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Real photos (sklearn, scikit-image) in several modes plus rendered text, as files."""
    folder = tmp_path_factory.mktemp("images")
    from sklearn.datasets import load_sample_images

    for index, array in enumerate(load_sample_images().images):  # china.jpg, flower.jpg (RGB)
        Image.fromarray(array).resize((96, 72)).save(folder / f"sklearn_{index}.jpg", quality=90)
    from skimage import data

    Image.fromarray(data.camera()).resize((64, 64)).save(folder / "camera_gray.png")  # grayscale
    Image.fromarray(data.astronaut()).resize((80, 80)).convert("CMYK").save(
        folder / "astronaut_cmyk.jpg"
    )
    rgba = Image.fromarray(data.coffee()).resize((70, 50)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "coffee_rgba.png")
    render_text("calibrate 123", seed=1).save(folder / "text.png")
    return folder
