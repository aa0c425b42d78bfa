"""Review regressions (round 2): Q/DQ and FP16 models built from torch-like graphs, checked with ORT and TensorRT-RTX."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.quant.api import to_fp16


def _rtx_builds(model: onnx.ModelProto) -> bool:
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString()) and not parser.num_errors
    config = builder.create_builder_config()
    return builder.build_serialized_network(network, config) is not None


def _masked_scores(kind: str = "value") -> onnx.ModelProto:
    """y = Softmax(s + (1 - mask) * finfo(float32).min), the constant a Constant node (as torch exports it)."""
    lowest = float(np.finfo(np.float32).min)
    if kind == "value":
        const = helper.make_node(
            "Constant",
            [],
            ["low"],
            name="c_low",
            value=numpy_helper.from_array(np.array(lowest, np.float32), "v"),
        )
    else:
        const = helper.make_node("Constant", [], ["low"], name="c_low", value_float=lowest)
    nodes = [
        helper.make_node(
            "Constant",
            [],
            ["one"],
            name="c_one",
            value=numpy_helper.from_array(np.array(1.0, np.float32), "o"),
        ),
        helper.make_node("Sub", ["one", "mask"], ["inv"], name="sub"),
        const,
        helper.make_node("Mul", ["inv", "low"], ["bias"], name="mul"),
        helper.make_node("Add", ["s", "bias"], ["sb"], name="add"),
        helper.make_node("Softmax", ["sb"], ["y"], name="softmax", axis=-1),
    ]
    inputs = [
        helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 5, 5]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [2, 5, 5]),
    ]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 5])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("kind", ["value", "value_float"])
def test_to_fp16_keeps_constant_node_beyond_fp16_range(kind):
    """A Constant node holding float32's lowest value (attention masks) became -inf in FP16: 0 * -inf = NaN."""
    ort = pytest.importorskip("onnxruntime")
    model = _masked_scores(kind)
    rng = np.random.default_rng(0)
    s = rng.standard_normal((2, 5, 5)).astype(np.float32)
    mask = (rng.random((2, 5, 5)) > 0.3).astype(np.float32)
    mask[..., 0] = 1.0  # no fully masked row
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"s": s, "mask": mask}
    )[0]
    res = to_fp16(model, keep_io_types=True)
    onnx.checker.check_model(res.model, full_check=True)
    assert {k.node for k in res.kept} >= {"c_low", "mul"}
    out = ort.InferenceSession(
        res.model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"s": s, "mask": mask})[0]
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, atol=2e-3)


def test_to_fp16_constant_node_model_builds_with_rtx():
    res = to_fp16(_masked_scores(), keep_io_types=True)
    assert _rtx_builds(res.model)
