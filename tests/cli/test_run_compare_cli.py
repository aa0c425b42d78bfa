"""`onnx2trt run` and `onnx2trt compare` on small ONNX models (ONNX Runtime on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.cli import compare_cmd, run_cmd
from onnx2trt_lib.cli._common import Onnx2TrtGroup


def _affine(path: Path, shape: list, scale: np.ndarray) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(scale.astype(np.float32), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def cli() -> Onnx2TrtGroup:
    group = Onnx2TrtGroup("onnx2trt")
    group.add_command(run_cmd.command)
    group.add_command(compare_cmd.command)
    return group


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    scale = np.float32([1, 2, 3, 4])
    bumped = scale.copy()
    bumped[1] += 0.5
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "wrong.npz", images=x)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    return {
        "model": _affine(tmp_path / "m.onnx", ["N", 4], scale),
        "same": _affine(tmp_path / "same.onnx", ["N", 4], scale.copy()),
        "bumped": _affine(tmp_path / "bumped.onnx", ["N", 4], bumped),
        "static": _affine(tmp_path / "static.onnx", [2, 4], scale),
        "x": tmp_path / "x.npz",
        "wrong": tmp_path / "wrong.npz",
        "junk": tmp_path / "junk.npz",
        "dir": tmp_path,
    }


def invoke(cli, args: list) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], obj={}, catch_exceptions=False)


def test_help(cli) -> None:
    for sub in ("run", "compare"):
        result = invoke(cli, [sub, "--help"])
        assert result.exit_code == 0 and "--input" in result.output


def test_run_json_and_output_file(cli, files) -> None:
    out = files["dir"] / "out.npz"
    result = invoke(
        cli,
        [
            "run",
            files["model"],
            "--input",
            files["x"],
            "--output",
            out,
            "-n",
            "5",
            "--warmup",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    lat = payload["latency"]
    assert payload["iterations"] == 5 and payload["outputs"] == {
        "y": {"shape": [2, 4], "dtype": "float32"}
    }
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["throughput_qps"] == pytest.approx(1000 / lat["mean_ms"])
    with np.load(out) as npz:
        np.testing.assert_array_equal(
            npz["y"], np.arange(8, dtype=np.float32).reshape(2, 4) * np.float32([1, 2, 3, 4])
        )
    assert not [p for p in files["dir"].iterdir() if p.name.endswith(".tmp")]


def test_run_text_like_trtexec(cli, files) -> None:
    result = invoke(cli, ["run", files["static"], "-n", "3"])  # random inputs for a static model
    assert result.exit_code == 0, result.output
    assert (
        "Throughput:" in result.output
        and "percentile(99%)" in result.output
        and "output y: float32[2, 4]" in result.output
    )


def test_latency_stats_against_numpy() -> None:
    lat = [5.0, 1.0, 3.0, 2.0, 4.0]
    stats = run_cmd.latency_stats(lat)
    assert (stats["min_ms"], stats["max_ms"], stats["mean_ms"], stats["median_ms"]) == (
        1.0,
        5.0,
        3.0,
        3.0,
    )
    assert stats["p90_ms"] == pytest.approx(np.percentile(lat, 90))


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--input", "{wrong}"], 1, "unknown input(s) ['images'] and missing input(s) ['x']"),
        (["--input", "{junk}"], 2, "not a readable .npz"),
        (["--input", "{dir}/nope.npz"], 2, "no such file"),
        ([], 1, "dynamic dimensions; give input data"),
        (["--input", "{x}", "--output", "{dir}/no/such/out.npz"], 1, "does not exist"),
    ],
)
def test_run_errors_are_one_line(cli, files, extra, code, message) -> None:
    args = ["run", str(files["model"]), *[e.format(**files) for e in extra]]
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (files["dir"] / "out.npz").exists()


def test_run_missing_model(cli, files) -> None:
    result = CliRunner().invoke(cli, ["run", str(files["dir"] / "nope.onnx")], obj={})
    assert result.exit_code == 1 and "no such file" in result.output


def test_compare_pass_and_fail(cli, files) -> None:
    ok = invoke(
        cli,
        [
            "compare",
            files["same"],
            files["model"],
            "--input",
            files["x"],
            "--atol",
            "0",
            "--rtol",
            "0",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "PASSED" in ok.output
    bad = invoke(cli, ["compare", files["bumped"], files["model"], "--input", files["x"], "--json"])
    assert bad.exit_code == 3
    report = json.loads(bad.output)
    (out,) = report["outputs"]
    assert report["passed"] is False and out["mismatches"] == 2
    # row 1 of x is [4,5,6,7]: the bumped weight (column 1) adds 0.5*5
    assert out["worst"][0]["index"] == [1, 1] and out["worst"][0]["abs_err"] == pytest.approx(2.5)
    text = invoke(cli, ["compare", files["bumped"], files["model"], "--input", files["x"]])
    assert (
        text.exit_code == 3 and "FAILED" in text.output and "worst at feed 0 [1, 1]" in text.output
    )


def test_compare_several_inputs_and_tolerance(cli, files) -> None:
    result = invoke(
        cli,
        [
            "compare",
            files["bumped"],
            files["model"],
            "--input",
            files["x"],
            "--input",
            files["x"],
            "--atol",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0
    assert json.loads(result.output)["feeds"] == 2


def test_run_foreign_engine_is_a_one_line_error(cli, files) -> None:
    engine = files["dir"] / "foreign.engine"
    engine.write_bytes(b"\x00" * 256)
    result = CliRunner().invoke(cli, ["run", str(engine)], obj={})
    assert result.exit_code != 0 and "error:" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
