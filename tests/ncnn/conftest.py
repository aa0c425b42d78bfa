"""ncnn tests need the `ncnn` runtime and the `pnnx` converter (extra [ncnn]); they skip without."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from onnx2trt_lib import _optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))


def _need_ncnn() -> None:
    if not _optional.available("ncnn"):
        pytest.skip("ncnn is not installed (pip install 'onnx2trt_lib[ncnn]')")
    try:
        _optional.pnnx_binary()
    except Exception:
        pytest.skip("pnnx is not installed (pip install 'onnx2trt_lib[ncnn]')")


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory):
    """The numpy-trained digits CNN as a file, its calibration .npy and the test split."""
    _need_ncnn()
    pytest.importorskip("sklearn")
    import digits_cnn

    blob, data = digits_cnn.trained()
    folder = tmp_path_factory.mktemp("digits")
    (folder / "digits.onnx").write_bytes(blob)
    np.save(folder / "calib.npy", data["x_calib"])
    return folder / "digits.onnx", folder / "calib.npy", data


@pytest.fixture(scope="session")
def digits_ncnn(digits_files, tmp_path_factory):
    """One `onnx2trt ncnn` run on the digits CNN (entropy, protection on)."""
    from onnx2trt_lib.ncnn import ncnn_int8

    model, calib, data = digits_files
    out = tmp_path_factory.mktemp("digits-ncnn")
    return ncnn_int8(model, str(calib), out), data
