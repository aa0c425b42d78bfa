"""CLI behaviours found in review: outputs onto devices/FIFOs, --qdq onto the data, method options,
strict JSON, custom-domain ops, TensorRT's log lines, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.cli._common import print_json
from onnx2trt_lib.cli.main import cli

SAMPLE = Path(str(resources.files("onnx2trt_lib") / "data" / "sample" / "digits.onnx"))


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def conv_model(path: Path) -> Path:
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def custom_domain_model(path: Path) -> Path:
    """A Constant feeding a plugin op (com.acme::Foo), then a standard Add."""
    nodes = [
        helper.make_node(
            "Constant", [], ["k"], value=numpy_helper.from_array(np.ones((1, 4), np.float32))
        ),
        helper.make_node("Foo", ["k"], ["f"], domain="com.acme"),
        helper.make_node("Add", ["x", "f"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "plugin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)]
    )
    onnx.save(model, path)
    return path


def test_an_output_that_is_a_fifo_is_refused_and_left_alone(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = invoke("fix", str(SAMPLE), "-o", str(fifo))
    assert result.exit_code == 1 and "not a regular file" in result.output
    assert fifo.is_fifo()


def test_qdq_output_never_overwrites_the_calibration_data(tmp_path):
    model = conv_model(tmp_path / "m.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32))
    before = data.read_bytes()
    result = invoke(
        "calibrate",
        str(model),
        "--data",
        str(data),
        "-o",
        str(tmp_path / "c.cache"),
        "--qdq",
        str(data),
    )
    assert result.exit_code == 1 and "same file as input" in result.output
    assert data.read_bytes() == before and not (tmp_path / "c.cache").exists()


@pytest.mark.parametrize(
    "option", ['percentile="abc"', "percentile=NaN", "start_bin=1e400", "percentile=200", "foo=1"]
)
def test_bad_method_options_are_usage_errors_before_any_collection(tmp_path, option):
    model = conv_model(tmp_path / "m.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.ones((4, 3, 8, 8), np.float32))
    method = "mse" if option.startswith("start_bin") else "percentile"
    result = invoke(
        "calibrate",
        str(model),
        "--data",
        str(data),
        "-o",
        str(tmp_path / "c.cache"),
        "--method",
        method,
        "--method-option",
        option,
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "c.cache").exists()


def test_json_output_is_strict_json(capsys):
    print_json({"max_abs": float("inf"), "rel": [float("nan"), -float("inf"), 1.5]})
    text = capsys.readouterr().out

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    assert json.loads(text, parse_constant=refuse) == {
        "max_abs": "inf",
        "rel": ["nan", "-inf", 1.5],
    }


def test_fix_keeps_custom_domain_ops_and_json_stays_clean(tmp_path):
    model = custom_domain_model(tmp_path / "plugin.onnx")
    result = CliRunner().invoke(
        cli, ["fix", str(model), "-o", str(tmp_path / "out.onnx"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    json.loads(result.stdout)  # nothing else on stdout
    fixed = onnx.load(tmp_path / "out.onnx")
    assert [n.op_type for n in fixed.graph.node if n.domain == "com.acme"] == ["Foo"]


def test_build_error_is_one_line_without_tensorrt_log_lines(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    model = custom_domain_model(tmp_path / "plugin.onnx")
    code = "from onnx2trt_lib.cli.main import main; import sys; sys.argv[0] = 'onnx2trt'; main()"
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "build",
            str(model),
            "-o",
            str(tmp_path / "m.engine"),
            "--no-engine-cache",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_sigterm_takes_the_interrupt_path():
    from onnx2trt_lib.cli import main as main_module

    previous = signal.getsignal(signal.SIGTERM)
    try:
        main_module._terminate_as_interrupt()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("option", ["--atol", "--rtol"])
def test_compare_nan_tolerance_is_refused(tmp_path, option):
    feeds = tmp_path / "x.npz"
    np.savez(feeds, image=np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32))
    result = invoke("compare", str(SAMPLE), str(SAMPLE), "--input", str(feeds), option, "nan")
    assert result.exit_code != 0 and "atol and rtol must be >= 0, not NaN" in result.output
    assert "PASSED" not in result.output and "Traceback" not in result.output


def test_fp16_unknown_keep_node_names_its_own_option(tmp_path):
    result = invoke("fp16", str(SAMPLE), "-o", str(tmp_path / "h.onnx"), "--keep-nodes", "nope")
    assert result.exit_code == 2 and "--keep-nodes: no node named 'nope'" in result.output
