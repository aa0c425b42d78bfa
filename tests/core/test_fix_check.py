"""`fix` checks itself: original vs fixed in ONNX Runtime, a mismatch names the pass, nothing written."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from click.testing import CliRunner
from helpers import conv_relu_model
from onnx import TensorProto, helper, numpy_helper

import onnx2trt_lib
from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.errors import EquivalenceError
from onnx2trt_lib.passes import _registry
from onnx2trt_lib.passes._infra import result

SAMPLE = Path(str(resources.files("onnx2trt_lib") / "data" / "sample" / "digits.onnx"))


class PlantWrongConstantPass:
    """Test-only: a wrong fold, one weight off by 0.5 (as a folding bug would leave it)."""

    name = "plant-wrong-constant"
    op_types: tuple[str, ...] = ()

    def run(self, graph: gs.Graph):
        for tensor in graph.tensors().values():
            if isinstance(tensor, gs.Constant) and tensor.values.dtype == np.float32:
                tensor.values = tensor.values + np.float32(0.5)
                return result(self.name, {"planted": 1})
        return result(self.name, {})


def test_planted_wrong_fold_is_caught_and_named() -> None:
    model = conv_relu_model(batch="N")
    with pytest.raises(EquivalenceError) as caught:
        onnx2trt_lib.fix(model, passes=["fold-constants", PlantWrongConstantPass(), "cleanup"])
    message = str(caught.value)
    assert "'plant-wrong-constant'" in message and "output 'y' differs" in message
    assert "\n" not in message
    # without the check the same pipeline returns the wrong model silently
    fixed, report = onnx2trt_lib.fix(
        model, passes=["fold-constants", PlantWrongConstantPass()], check=False
    )
    assert report.check is None and report.modified


def test_check_passes_on_the_sample_and_is_reported(tmp_path: Path) -> None:
    fixed, report = onnx2trt_lib.fix(str(SAMPLE), target="tensorrt-7.1")
    assert report.check.status == "passed"
    assert report.check.feeds == 3 and report.check.outputs == 1
    assert report.to_dict()["check"]["status"] == "passed"
    assert report.summary_lines()[-1].startswith("check (ONNX Runtime)")


def test_generated_inputs_follow_dims_and_int_inputs() -> None:
    """Dynamic dims shared by name, an int index input and an int shape input (Expand) all run."""
    nodes = [
        helper.make_node("Gather", ["x", "idx"], ["g"], axis=1),
        helper.make_node("Expand", ["g", "shape"], ["e"]),
        helper.make_node("Add", ["one", "one"], ["two"]),
        helper.make_node("Mul", ["e", "two"], ["y"]),
        helper.make_node("Add", ["x", "z"], ["w"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["K"]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["A", "B"]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, ["N", 3]),
        ],
        initializer=[numpy_helper.from_array(np.float32(1), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fixed, report = onnx2trt_lib.fix(model, passes=["fold-constants"])
    assert report.modified and report.check.status == "passed", report.check
    assert report.check.outputs == 2


def test_check_is_skipped_with_a_reason_when_ort_cannot_run_the_original() -> None:
    nodes = [
        helper.make_node("Add", ["one", "one"], ["two"]),
        helper.make_node("Mul", ["x", "two"], ["m"]),
        helper.make_node("MyPluginOp", ["m"], ["y"], domain="my.plugins"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.float32(1), "one")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.plugins", 1)],
    )
    fixed, report = onnx2trt_lib.fix(model, passes=["fold-constants"])
    assert report.modified
    assert report.check.status == "skipped"
    assert "ONNX Runtime cannot run the original model" in report.check.note


def test_random_outputs_are_not_compared() -> None:
    """A model whose output is random differs from itself: only the other outputs are compared."""
    nodes = [
        helper.make_node("RandomNormalLike", ["x"], ["r"]),
        helper.make_node("Add", ["one", "one"], ["two"]),
        helper.make_node("Mul", ["x", "two"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
        [
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [64]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [64]),
        ],
        initializer=[numpy_helper.from_array(np.float32(1), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _, report = onnx2trt_lib.fix(model, passes=["fold-constants"])
    assert report.check.status == "passed" and report.check.outputs == 1
    assert "random" in report.check.note


@pytest.fixture
def planted_registered(monkeypatch):
    monkeypatch.setattr(_registry, "_entry_point_passes", lambda: (PlantWrongConstantPass,))


def test_cli_mismatch_names_the_pass_and_writes_nothing(tmp_path: Path, planted_registered) -> None:
    model, out = tmp_path / "m.onnx", tmp_path / "fixed.onnx"
    onnx.save(conv_relu_model(), model)
    passes = "fold-constants,plant-wrong-constant,cleanup"
    res = CliRunner().invoke(cli, ["fix", str(model), "-o", str(out), "--passes", passes])
    assert res.exit_code != 0
    assert "plant-wrong-constant" in res.output and "Traceback" not in res.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left either

    res = CliRunner().invoke(
        cli, ["fix", str(model), "-o", str(out), "--passes", passes, "--no-check", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert out.exists() and "check" not in json.loads(res.output)


def test_cli_check_inputs(tmp_path: Path, planted_registered) -> None:
    model, out, data = tmp_path / "m.onnx", tmp_path / "fixed.onnx", tmp_path / "in.npz"
    onnx.save(conv_relu_model(), model)
    np.savez(data, x=np.ones((1, 3, 8, 8), np.float32))
    res = CliRunner().invoke(
        cli, ["fix", str(model), "-o", str(out), "--check-inputs", str(data), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["check"]["feeds"] == 1

    res = CliRunner().invoke(
        cli,
        ["fix", str(model), "-o", str(out.with_name("bad.onnx")), "--check-inputs", str(data)]
        + ["--passes", "plant-wrong-constant"],
    )
    assert res.exit_code != 0 and "the given inputs" in res.output
    assert not out.with_name("bad.onnx").exists()

    np.savez(data, wrong_name=np.ones((1, 3, 8, 8), np.float32))
    res = CliRunner().invoke(
        cli, ["fix", str(model), "-o", str(out.with_name("c.onnx")), "--check-inputs", str(data)]
    )
    assert res.exit_code != 0 and "wrong_name" in res.output and "Traceback" not in res.output


def test_passes_that_change_values_on_purpose_are_not_checked() -> None:
    """to-fp16 changes every float on purpose: fix through it says so instead of failing."""
    fixed, report = onnx2trt_lib.fix(conv_relu_model(), passes=["infer-shapes", "to-fp16"])
    assert report.modified and report.check.status == "skipped"
    assert "to-fp16" in report.check.note
