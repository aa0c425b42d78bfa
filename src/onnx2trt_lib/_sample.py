"""Where the bundled sample lives (digits.onnx, calibration images, test set, preprocessing)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_dir() -> Path:
    """Folder of the bundled sample: `digits.onnx`, `calib_list.txt`, `calib_images/`,
    `digits_test.npz`, `preprocess.json`. Read it in place; write your outputs elsewhere."""
    return Path(str(resources.files("onnx2trt_lib") / "data" / "sample"))
