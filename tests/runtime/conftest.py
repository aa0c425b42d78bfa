"""Fixtures for runtime tests: tiny ONNX models made in code, and a fake TensorRT engine.

The fake implements exactly the documented TensorRT 10/11 calls TrtRunner uses
(num_io_tensors, get_tensor_name/mode/dtype/shape, get_tensor_profile_shape,
create_execution_context, set_input_shape, get_tensor_shape, set_tensor_address,
execute_async_v3), so binding logic is tested without TensorRT or a GPU.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.calls: list[tuple] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.calls.append(("set_input_shape", name, tuple(shape)))
        lo, _, hi = self.engine.profiles.get(name, (None, None, None))
        declared = self.engine.shapes[name]
        if len(shape) != len(declared):
            return False
        if lo is not None and any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            return False
        if any(d >= 0 and d != s for d, s in zip(declared, shape)):
            return False
        self.input_shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.inputs:
            return self.input_shapes.get(name, self.engine.shapes[name])
        if any(n not in self.input_shapes and -1 in self.engine.shapes[n] for n in self.engine.inputs):
            return self.engine.shapes[name]
        full = {n: self.input_shapes.get(n, self.engine.shapes[n]) for n in self.engine.inputs}
        return self.engine.output_shape(name, full)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.calls.append(("set_tensor_address", name, ptr))
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.calls.append(("execute_async_v3", stream_handle))
        return self.engine.on_execute(self, stream_handle)


class FakeEngine:
    """tensors: (name, "INPUT"|"OUTPUT", dtype name, shape with -1 for dynamic)."""

    def __init__(
        self,
        tensors: list[tuple[str, str, str, tuple[int, ...]]],
        *,
        profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None,
        output_shape: Callable[[str, dict], tuple[int, ...]] | None = None,
        on_execute: Callable[[FakeContext, int], bool] | None = None,
    ) -> None:
        self.tensors = tensors
        self.shapes = {n: tuple(s) for n, _, _, s in tensors}
        self.inputs = [n for n, m, _, _ in tensors if m == "INPUT"]
        self.profiles = profiles or {}
        first_input = self.inputs[0] if self.inputs else None
        self.output_shape = output_shape or (lambda name, ins: ins[first_input])
        self.on_execute = on_execute or (lambda ctx, stream: True)
        self.contexts: list[FakeContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, index: int) -> str:
        return self.tensors[index][0]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return next(TensorIOMode[m] for n, m, _, _ in self.tensors if n == name)

    def get_tensor_dtype(self, name: str) -> DataType:
        return next(DataType[d] for n, _, d, _ in self.tensors if n == name)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple:
        return self.profiles[name]

    def create_execution_context(self) -> FakeContext:
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


@pytest.fixture
def fake_engine() -> type[FakeEngine]:
    return FakeEngine


def make_affine_model(
    shape: list[int | str],
    *,
    scale: np.ndarray | float = 2.0,
    bias: np.ndarray | float = 0.5,
    dtype: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    """y = x * scale + bias, with named input x and output y."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    scale_arr = np.asarray(scale, dtype=np_dtype)
    bias_arr = np.asarray(bias, dtype=np_dtype)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["xs"]), helper.make_node("Add", ["xs", "bias"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("y", dtype, shape)],
        initializer=[numpy_helper.from_array(scale_arr, "scale"), numpy_helper.from_array(bias_arr, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def affine_model() -> Callable[..., onnx.ModelProto]:
    return make_affine_model


def ppocr_model(name: str) -> Path:
    """Path of a PP-OCR model shipped by rapidocr-onnxruntime; skip when not installed."""
    pkg = pytest.importorskip("rapidocr_onnxruntime")
    path = Path(pkg.__file__).parent / "models" / name
    if not path.is_file():
        pytest.skip(f"{name} not shipped by this rapidocr_onnxruntime")
    return path


@pytest.fixture
def ppocr() -> Callable[[str], Path]:
    return ppocr_model
