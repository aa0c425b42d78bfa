"""`compare --per-tensor` regressions: FP16 models (feeds cast per input) and upper-case `.ONNX` names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from helpers import conv_relu_model

from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.quant import quantize, to_fp16


def test_per_tensor_runs_an_fp16_model_on_cast_feeds(tmp_path: Path) -> None:
    fp32 = conv_relu_model()
    fp32_path, fp16_path, feed = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx", tmp_path / "x.npz"
    onnx.save(fp32, fp32_path)
    onnx.save(to_fp16(fp32).model, fp16_path)
    np.savez(feed, x=np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32))
    res = CliRunner().invoke(
        cli,
        [
            "compare",
            str(fp16_path),
            str(fp32_path),
            "--input",
            str(feed),
            "--per-tensor",
            "--atol",
            "0.1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["per_tensor"] == []  # an FP16 model quantizes no tensor


def test_per_tensor_accepts_upper_case_onnx_suffixes(tmp_path: Path) -> None:
    fp32 = conv_relu_model()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    fp32_path, int8_path, feed = tmp_path / "FP32.ONNX", tmp_path / "INT8.ONNX", tmp_path / "x.npz"
    onnx.save(fp32, fp32_path)
    quantize(fp32, {"x": float(np.abs(x).max())}, protect=False, output=int8_path)
    np.savez(feed, x=x)
    res = CliRunner().invoke(
        cli,
        [
            "compare",
            str(int8_path),
            str(fp32_path),
            "--input",
            str(feed),
            "--per-tensor",
            "--atol",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    tensors = json.loads(res.output)["per_tensor"]
    assert [t["name"] for t in tensors] == ["x"] and tensors[0]["sqnr_db"] > 30
