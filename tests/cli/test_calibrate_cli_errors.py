"""`calibrate` refusals that once ended in a traceback (a local import shadowed UsageError: F823)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.cli import main as cli_main


def _mlp(path) -> None:
    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4) / 8, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture
def setup(tmp_path):
    _mlp(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((8, 2)).astype(np.float32))

    def invoke(*args):
        return CliRunner().invoke(cli_main.cli, [str(a) for a in args], obj={})

    return tmp_path, invoke


def _one_line_usage_error(result, message: str) -> None:
    assert result.exit_code == 2, (result.exception, result.output)
    assert isinstance(result.exception, SystemExit)  # not an UnboundLocalError caught by click
    assert message in result.output and result.output.strip().count("\n") == 0, result.output
    assert "Traceback" not in result.output


def test_qdq_equal_to_the_cache_is_a_one_line_error(setup):
    tmp, invoke = setup
    out = tmp / "same.cache"
    result = invoke("calibrate", tmp / "m.onnx", "--data", tmp / "d.npz", "-o", out, "--qdq", out)
    _one_line_usage_error(result, "is also another output of this command")
    assert not out.exists()


def test_plots_on_a_cache_hit_is_a_one_line_error(setup):
    pytest.importorskip("matplotlib")
    tmp, invoke = setup
    out = tmp / "m.cache"
    args = ("calibrate", tmp / "m.onnx", "--data", tmp / "d.npz", "-o", out, "--quiet")
    assert invoke(*args).exit_code == 0
    written = out.read_bytes()
    result = invoke(*args, "--plots", tmp / "plots")
    _one_line_usage_error(result, "reused from the cache")
    assert out.read_bytes() == written and not (tmp / "plots").exists()
