"""PassManager and registry guards: wrong pass objects, wrong reports, passes that break the model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import conv_relu_model
from onnx import TensorProto

from onnx2trt_lib.errors import PassError, UsageError
from onnx2trt_lib.passes import (
    PassManager,
    PassResult,
    _registry,
    get_pass,
    registered_passes,
    result,
)
from onnx2trt_lib.passes.cleanup import CleanupPass


class _RenameRelu:
    name = "rename-relu"
    op_types = ("Relu",)

    def run(self, graph: gs.Graph) -> PassResult:
        changed = 0
        for node in graph.nodes:
            if node.op == "Relu" and node.name != "renamed":
                node.name, changed = "renamed", changed + 1
        return result(self.name, {"renamed": changed})


class _BreakRelu:
    """Turns Relu into an op no ONNX opset has: the export succeeds, the model is invalid."""

    name = "break-relu"
    op_types = ("Relu",)

    def run(self, graph: gs.Graph) -> PassResult:
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "NoSuchOp"
        return result(self.name, {"broken": 1})


class _RetypeOutput:
    """Declares the float output int64: only strict shape inference (full_check) notices."""

    name = "retype-output"
    op_types = ()

    def run(self, graph: gs.Graph) -> PassResult:
        graph.outputs[0].dtype = np.int64
        return result(self.name, {"retyped": 1})


def test_pass_class_instead_of_instance_is_refused_up_front() -> None:
    with pytest.raises(
        TypeError, match=r"CleanupPass is a pass class: pass an instance, e\.g\. CleanupPass\(\)"
    ):
        PassManager([CleanupPass])


def test_pass_name_string_is_a_type_error_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"get_pass\('cleanup'\)"):
        PassManager(["cleanup"])


@pytest.mark.parametrize(
    "bad",
    [None, {"modified": True}, result("someone-else", {"x": 1})],
    ids=["none", "dict", "other-name"],
)
def test_wrong_report_is_a_one_line_pass_error(bad) -> None:
    class Wrong:
        name = "wrong-report"
        op_types = ()

        def run(self, graph):
            return bad

    with pytest.raises(
        PassError,
        match=r"^pass 'wrong-report' failed \(passes run before it: cleanup\): run\(\) returned",
    ) as info:
        PassManager([get_pass("cleanup"), Wrong()]).run(conv_relu_model())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("breaker", [_BreakRelu, _RetypeOutput])
def test_pass_producing_an_invalid_model_is_named(breaker) -> None:
    model = conv_relu_model()
    before = model.SerializeToString()
    pipeline = [get_pass("cleanup"), breaker(), _RenameRelu(), get_pass("fold-constants")]
    with pytest.raises(
        PassError,
        match=rf"^pass '{breaker.name}' produced an invalid model "
        r"\(passes run before it: cleanup\): ",
    ) as info:
        PassManager(pipeline).run(model)
    assert "\n" not in str(info.value)
    assert model.SerializeToString() == before


def test_valid_pipeline_output_passes_the_full_checker() -> None:
    fixed, report = PassManager([get_pass("cleanup"), _RenameRelu(), get_pass("infer-shapes")]).run(
        conv_relu_model()
    )
    assert report.modified
    onnx.checker.check_model(fixed, full_check=True)


def test_already_invalid_input_is_not_blamed_on_a_pass() -> None:
    model = conv_relu_model()
    model.graph.output[
        0
    ].type.tensor_type.elem_type = TensorProto.INT64  # checker (full) refuses the input
    # full check: type inference refuses it
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.checker.check_model(model, full_check=True)
    fixed, report = PassManager([_RenameRelu()]).run(model)
    assert report.modified and [n.name for n in fixed.graph.node if n.op_type == "Relu"] == [
        "renamed"
    ]


def test_entry_point_naming_an_instance_is_refused(monkeypatch) -> None:
    class FakeEntryPoint:
        name = "rename-relu"

        def load(self):
            return _RenameRelu()  # an instance, not the class

    monkeypatch.setattr(_registry, "entry_points", lambda group: [FakeEntryPoint()])
    _registry._entry_point_passes.cache_clear()
    try:
        with pytest.raises(UsageError, match="not a pass class but an instance"):
            registered_passes()
    finally:
        _registry._entry_point_passes.cache_clear()
