"""Small model builders shared by tests (onnx.helper only: no torch needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_relu_model(
    *, batch: int | str = 1, channels: int = 3, size: int = 8, opset: int = 17, seed: int = 0
) -> onnx.ModelProto:
    """x -> Conv(3x3, 4 ch) -> Relu -> y, plus a dead branch and a foldable constant chain."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(
        rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w"
    )
    bias_parts = [
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b0"),
        numpy_helper.from_array(np.full(4, 0.5, np.float32), "b1"),
    ]
    nodes = [
        helper.make_node("Add", ["b0", "b1"], ["bias"], name="fold_me"),
        helper.make_node("Conv", ["x", "w", "bias"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
        helper.make_node("Sigmoid", ["c"], ["dead"], name="dead_branch"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, size, size])],
        initializer=[weight, *bias_parts],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def apply_pass(pass_obj, model: onnx.ModelProto):
    """Run one pass directly on a graph-surgeon import of `model` (no PassManager cleanup);
    returns (exported model with the source's IR version, PassResult)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    res = pass_obj.run(graph)
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    return out, res


def dotted_name(func) -> str:
    """`a.b.c` for an ast Name/Attribute chain (the callee of a Call); '' for anything else."""
    import ast

    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def count_fp32_runs(monkeypatch) -> list[int]:
    """Record the rows of every FP32 reference run (quant.protect.fp32_outputs) into the list
    returned, which fills as the code under test runs."""
    import importlib

    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")  # not the function
    real = protect_module.fp32_outputs
    calls: list[int] = []

    def counted(model, data):
        calls.append(sum(len(next(iter(b.values()))) for b in data))
        return real(model, data)

    monkeypatch.setattr(protect_module, "fp32_outputs", counted)
    return calls
