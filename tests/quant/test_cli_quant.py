"""`onnx2trt quantize` and `onnx2trt fp16` through click, with the CLI's error mapping."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnx2trt_lib.cli import fp16_cmd, quantize_cmd
from onnx2trt_lib.cli._common import Onnx2TrtGroup


@pytest.fixture
def cli():
    group = Onnx2TrtGroup("onnx2trt")
    group.add_command(quantize_cmd.command)
    group.add_command(fp16_cmd.command)
    return lambda args: CliRunner().invoke(group, args, obj={})


@pytest.fixture
def model_file(digits, tmp_path):
    path = tmp_path / "digits.onnx"
    onnx.save(digits[0], path)
    return path


def test_quantize_writes_model_and_json(cli, model_file, digits_cache, tmp_path):
    out = tmp_path / "q.onnx"
    res = cli(
        [
            "quantize",
            str(model_file),
            "--cache",
            str(digits_cache),
            "-o",
            str(out),
            "--no-protect",
            "--json",
        ]
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert payload["pass"]["counts"]["quantized_nodes"] == 4 and payload["protection"] is None
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(out).graph.node) == 8


def test_quantize_with_data_runs_protection(cli, model_file, digits, digits_cache, tmp_path):
    data = tmp_path / "held_out.npy"
    np.save(data, digits[1]["x_train"][:64])
    out = tmp_path / "q.onnx"
    res = cli(
        [
            "quantize",
            str(model_file),
            "--cache",
            str(digits_cache),
            "-o",
            str(out),
            "--data",
            str(data),
            "--exclude",
            "conv1",
        ]
    )
    assert res.exit_code == 0, res.output
    assert "protection:" in res.output and "wrote" in res.output
    q = onnx.load(out)
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    assert conv1.input[0] == "x"


def test_quantize_errors_are_one_line_and_write_nothing(cli, model_file, tmp_path):
    cache = tmp_path / "other.cache"
    cache.write_text(
        "TRT-100300-EntropyCalibration2\n" + "".join(f"/other/t{i}: 3c010204\n" for i in range(5))
    )
    out = tmp_path / "q.onnx"
    res = cli(["quantize", str(model_file), "--cache", str(cache), "-o", str(out)])
    assert res.exit_code == 1
    assert "another model" in res.output and "Traceback" not in res.output
    assert not out.exists()
    res = cli(
        [
            "quantize",
            str(model_file),
            "--cache",
            str(cache),
            "-o",
            str(out),
            "--data",
            str(tmp_path / "nope.npy"),
        ]
    )
    assert res.exit_code == 2 and "no such file" in res.output


def test_fp16_command(cli, model_file, tmp_path):
    out = tmp_path / "f.onnx"
    res = cli(
        ["fp16", str(model_file), "-o", str(out), "--keep-io-types", "--keep-ops", "Gemm", "--json"]
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert [s["node"] for s in payload["pass"]["skipped"]] == ["fc"]
    model = onnx.load(out)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    res = cli(["fp16", str(out), "-o", str(tmp_path / "again.onnx")])
    assert (
        res.exit_code == 0
    )  # still has float32 parts (kept Gemm, I/O): converts the rest, no error


def test_calibrate_qdq_rerun_writes_the_same_model(model_file, digits, tmp_path):
    """A re-run of `calibrate --qdq` finds its cache up to date, but the Q/DQ ranges come from
    the histograms, which a cache hit lacks: they are computed again, so the same model is
    written (before: the cache's entropy ranges, another model) and the cache is unchanged.
    With --method the cache's ranges are what was asked: the hit is reused."""
    from onnx2trt_lib.cli.main import cli as main

    data = tmp_path / "calib.npy"
    np.save(data, digits[1]["x_calib"][:64])
    cache, out = tmp_path / "d.cache", tmp_path / "q.onnx"
    args = ["calibrate", str(model_file), "--data", str(data), "-o", str(cache)]
    runs = []
    for _ in range(2):
        res = CliRunner().invoke(main, [*args, "--qdq", str(out), "--json"])
        assert res.exit_code == 0, res.output
        runs.append((json.loads(res.output), out.read_bytes(), cache.read_bytes()))
    (first, model1, cache1), (second, model2, cache2) = runs
    assert model2 == model1 and cache2 == cache1
    assert not second["cache_hit"] and any("Q/DQ ranges: " in n for n in second["qdq"]["notes"])
    assert not any("the cache was reused" in n for n in second["qdq"]["notes"])
    res = CliRunner().invoke(main, [*args, "--method", "entropy", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["cache_hit"], res.output
