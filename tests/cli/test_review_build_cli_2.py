"""`onnx2trt build` review fixes (round 2), through click's CliRunner with real TensorRT-RTX builds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.cli.main import cli

pytestmark = pytest.mark.trt


@pytest.fixture(autouse=True)
def _engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(tmp_path / "engine-cache"))


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), obj={}, catch_exceptions=False)


def _save(tmp_path, graph, name="m.onnx", **save_kwargs):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path), **save_kwargs)
    return path


def test_shape_tensor_input_builds_from_trtexec_style_values(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shp"], ["y"])],
        "reshape",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
            helper.make_tensor_value_info("shp", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
    )
    model = _save(tmp_path, graph)
    missing = _invoke("build", str(model), "-o", str(tmp_path / "r.engine"), "--no-engine-cache")
    assert missing.exit_code == 2
    assert "input 'shp' is a shape tensor" in missing.output and "Traceback" not in missing.output
    ok = _invoke(
        "build",
        str(model),
        "-o",
        str(tmp_path / "r.engine"),
        "--shapes",
        "shp:3x4",
        "--no-engine-cache",
        "-q",
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "r.engine").is_file()


def test_output_equal_to_external_weights_is_refused(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[w],
    )
    model = _save(tmp_path, graph, save_as_external_data=True, location="w.data", size_threshold=0)
    before = (tmp_path / "w.data").read_bytes()
    result = _invoke("build", str(model), "-o", str(tmp_path / "w.data"))
    assert result.exit_code == 1
    assert "same file as input" in result.output and "Traceback" not in result.output
    assert (tmp_path / "w.data").read_bytes() == before


def test_timing_cache_equal_to_output_is_refused(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = _save(tmp_path, graph)
    out = str(tmp_path / "r.engine")
    result = _invoke("build", str(model), "-o", out, "--timing-cache", out)
    assert result.exit_code == 2
    assert "is the same file as output" in result.output
    assert not (tmp_path / "r.engine").exists()


def test_build_with_stderr_in_a_log_leaves_no_progress_residue(tmp_path):
    # rich's progress, stopped on a non-terminal, printed an empty line before the result or error line
    import subprocess
    import sys

    pytest.importorskip("tensorrt_rtx")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = _save(tmp_path, graph)
    run = [sys.executable, "-m", "onnx2trt_lib.cli.main", "build"]
    ok = subprocess.run(
        [*run, str(model), "-o", str(tmp_path / "m.engine")], capture_output=True, text=True
    )
    assert ok.returncode == 0 and ok.stderr == "" and ok.stdout.startswith("built:"), (
        ok.stdout,
        ok.stderr,
    )
    bad = subprocess.run(
        [*run, str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.engine")],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode != 0 and bad.stderr.startswith("error:") and bad.stderr.count("\n") == 1
    ), bad.stderr
