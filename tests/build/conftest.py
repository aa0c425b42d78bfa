"""Tiny models (onnx.helper only) and an isolated engine cache for the build tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _finish(
    graph: onnx.GraphProto, *, opset: int = 17, extra_opsets: tuple = ()
) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets], producer_name="tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_relu(batch: int | str = 1, *, seed: int = 0) -> onnx.ModelProto:
    """x[batch,3,8,8] -> Conv(3x3, 4 ch) -> Relu -> y."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"], name="relu0"),
        ],
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])],
        initializer=[w, b],
    )
    return _finish(graph)


def two_input_matmul(*, seed: int = 0) -> onnx.ModelProto:
    """a[N,16] @ W[16,8] + b[M,8]: two inputs with dynamic batch axes, one MatMul."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["a", "W"], ["m"], name="matmul0"),
            helper.make_node("Add", ["m", "b"], ["y"], name="add0"),
        ],
        "matmul",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 16]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[w],
    )
    return _finish(graph)


def unparseable() -> onnx.ModelProto:
    """Valid ONNX that TensorRT cannot parse: a custom-domain op with no plugin."""
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu0"),
            helper.make_node("FooBar", ["r"], ["y"], name="weird_node", domain="custom.ops"),
        ],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    return _finish(graph, extra_opsets=(helper.make_opsetid("custom.ops", 1),))


@pytest.fixture
def save(tmp_path: Path) -> Callable[[onnx.ModelProto, str], Path]:
    def _save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    return _save


@pytest.fixture(autouse=True)
def isolated_engine_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own default engine cache, never ~/.cache."""
    root = tmp_path / "engine-cache"
    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(root))
    return root


@pytest.fixture
def build_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts real engine builds made by the Builder facade (cache hits do not build)."""
    from onnx2trt_lib.build import builder as builder_module

    calls: list[int] = []
    real = builder_module.engine_bytes_from_network

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(builder_module, "engine_bytes_from_network", counting)
    return calls


@pytest.fixture
def rtx():
    return pytest.importorskip("tensorrt_rtx")


MODELS = {"conv_relu": conv_relu, "two_input_matmul": two_input_matmul, "unparseable": unparseable}


@pytest.fixture
def models() -> dict[str, Callable[..., onnx.ModelProto]]:
    return MODELS
