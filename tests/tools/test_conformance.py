"""tools/conformance.py: the RTX oracle's verdicts and the confusion counts of its report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

TOOL = Path(__file__).resolve().parents[2] / "tools" / "conformance.py"


@pytest.fixture(scope="module")
def conformance():
    spec = importlib.util.spec_from_file_location("conformance", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reduce_sum(tmp_path: Path, axes_as_input: bool) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inputs, inits = [x], []
    if axes_as_input:
        inputs.append(helper.make_tensor_value_info("axes", TensorProto.INT64, [1]))
    else:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="r")
    model = helper.make_model(
        helper.make_graph([node], "g", inputs, [y], inits),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    model.ir_version = 8
    path = tmp_path / f"m{int(axes_as_input)}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.trt
def test_oracle_verdicts(conformance, tmp_path):
    assert conformance.oracle_one(_reduce_sum(tmp_path, False))["verdict"] == "accepted"
    refused = conformance.oracle_one(_reduce_sum(tmp_path, True))
    assert refused["verdict"] == "refused-parse" and refused["op"] == "ReduceSum"
    assert "build-time constant" in refused["message"]


def test_confusion_counts(conformance):
    verdicts = {
        "a": {"verdict": "refused-parse", "op": "ReduceSum"},
        "b": {"verdict": "refused-build", "op": None},
        "c": {"verdict": "accepted"},
        "d": {"verdict": "accepted"},
        "e": {"verdict": "timeout"},  # unknown: left out
    }

    def res(*ops, error=None):
        findings = [{"op": op, "rule": "r", "node": "n", "message": ""} for op in ops]
        return {"tensorrt-rtx": {"findings": findings, "error": error, "ms": 0.1}}

    lint = {"a": res("Squeeze"), "b": res(), "c": res("Add"), "d": res(), "e": res("X")}
    tp, fn, tn, fp, errors, misses, alarms, (agree, compared) = conformance._confusion(
        sorted(verdicts), verdicts, lint, "tensorrt-rtx"
    )
    assert (tp, fn, tn, fp, errors) == (1, 1, 1, 1, 0)
    assert misses == ["b"] and alarms == ["c"]
    assert (agree, compared) == (0, 1)  # lint named Squeeze, the parser ReduceSum
