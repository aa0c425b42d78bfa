"""`onnx2trt compare --per-tensor`: layer-wise SQNR of a Q/DQ model against its FP32 original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from helpers import conv_relu_model, run_ort

from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.quant import quantize


def test_per_tensor_sqnr_is_reported_worst_first(tmp_path: Path) -> None:
    fp32 = conv_relu_model()
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ranges = {"x": float(np.abs(x).max())}
    fp32_path, int8_path, feed = tmp_path / "fp32.onnx", tmp_path / "int8.onnx", tmp_path / "x.npz"
    onnx.save(fp32, fp32_path)
    quantize(fp32_path, ranges, protect=False, output=int8_path)
    np.savez(feed, x=x[:1])
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
    assert [t["name"] for t in tensors] == ["x"]
    # independent SQNR of the input's fake quantization: scale amax/127, round half to even
    scale = ranges["x"] / 127
    fake = np.clip(np.round(x[:1] / scale), -127, 127) * scale
    sqnr = 10 * np.log10(np.sum(x[:1] ** 2) / np.sum((x[:1] - fake) ** 2))
    assert abs(tensors[0]["sqnr_db"] - sqnr) < 0.05
    assert run_ort(onnx.load(int8_path), {"x": x[:1]})[0].shape == (1, 4, 8, 8)


def test_per_tensor_refuses_engines(tmp_path: Path) -> None:
    fp32_path = tmp_path / "fp32.onnx"
    onnx.save(conv_relu_model(), fp32_path)
    fake_engine = tmp_path / "m.engine"
    fake_engine.write_bytes(b"\0" * 64)
    res = CliRunner().invoke(cli, ["compare", str(fake_engine), str(fp32_path), "--per-tensor"])
    assert res.exit_code != 0 and "Traceback" not in res.output
