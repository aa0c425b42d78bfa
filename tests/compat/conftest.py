"""Small single-node ONNX models for the lint tests, made with onnx.helper (no fixtures on disk)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, inits=(), opset=19, outputs=None) -> onnx.ModelProto:
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _x(shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def resize(
    mode: str = "linear",
    coord: str | None = "half_pixel",
    *,
    scales: str = "initializer",  # initializer | constant-node | computed | input | shape | sizes
    opset: int = 19,
    **attrs,
) -> onnx.ModelProto:
    """One Resize doubling H and W of a 1x3x8x8 input, its scales/sizes fed as asked."""
    inputs = [_x()]
    inits, nodes = [], []
    factor = np.array([1, 1, 2, 2], np.float32)
    if coord is not None:
        attrs["coordinate_transformation_mode"] = coord
    if scales == "initializer":
        inits.append(numpy_helper.from_array(factor, "scales"))
    elif scales == "constant-node":
        nodes.append(
            helper.make_node("Constant", [], ["scales"], value=numpy_helper.from_array(factor))
        )
    elif scales == "computed":  # Add of two initializers: foldable
        inits += [
            numpy_helper.from_array(np.ones(4, np.float32), "a"),
            numpy_helper.from_array(factor - 1, "b"),
        ]
        nodes.append(helper.make_node("Add", ["a", "b"], ["scales"], name="add_scales"))
    elif scales == "input":  # float scales fed by the user at run time
        inputs.append(helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4]))
    elif scales == "shape":  # computed from the input's shape only
        inits.append(numpy_helper.from_array(factor, "k"))
        nodes += [
            helper.make_node("Shape", ["x"], ["sh"]),
            helper.make_node("Cast", ["sh"], ["shf"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["shf", "shf"], ["ones"]),
            helper.make_node("Mul", ["ones", "k"], ["scales"]),
        ]
    elif scales == "sizes":
        inits.append(numpy_helper.from_array(np.array([1, 3, 16, 16], np.int64), "sizes"))
    else:
        raise ValueError(scales)
    if opset < 11:
        ins = ["x", "scales"]
    elif scales == "sizes":
        ins = ["x", "", "", "sizes"]
    else:
        ins = ["x", "", "scales"]
    nodes.append(helper.make_node("Resize", ins, ["y"], name="resize", mode=mode, **attrs))
    return _model(nodes, inputs, inits, opset)


def upsample(scales: str = "initializer") -> onnx.ModelProto:
    inits, nodes = [], []
    factor = np.array([1, 1, 2, 2], np.float32)
    if scales == "initializer":
        inits.append(numpy_helper.from_array(factor, "scales"))
    else:
        inits += [
            numpy_helper.from_array(np.ones(4, np.float32), "a"),
            numpy_helper.from_array(factor - 1, "b"),
        ]
        nodes.append(helper.make_node("Add", ["a", "b"], ["scales"]))
    nodes.append(helper.make_node("Upsample", ["x", "scales"], ["y"], name="up", mode="linear"))
    return _model(nodes, [_x()], inits, opset=9)


def gather_elements(axis: int = 1) -> onnx.ModelProto:
    data = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])
    idx = numpy_helper.from_array(
        np.array([[0, 1, 4], [2, 3, 0], [1, 1, 1], [4, 0, 2]], np.int64), "i"
    )
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], name="ge", axis=axis)
    return _model([node], [data], [idx], opset=13)


def scatter_nd(reduction: str | None = None, opset: int = 18) -> onnx.ModelProto:
    data = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])
    upd = helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, 5])
    idx = numpy_helper.from_array(np.array([[0], [2]], np.int64), "i")
    attrs = {} if reduction is None else {"reduction": reduction}
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="scatter", **attrs)
    return _model([node], [data, upd], [idx], opset=opset)


def unary(op: str, opset: int = 17, out_type: int = TensorProto.FLOAT, **attrs) -> onnx.ModelProto:
    """A single-input op on a float 1x3x8x8 tensor (Relu, NonZero, Unique, ...)."""
    out = helper.make_tensor_value_info("y", out_type, None)
    return _model(
        [helper.make_node(op, ["x"], ["y"], name=op.lower(), **attrs)],
        [_x()],
        opset=opset,
        outputs=[out],
    )


def scatter_elements(reduction: str | None = None, opset: int = 18) -> onnx.ModelProto:
    data = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])
    upd = helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, 2])
    idx = numpy_helper.from_array(np.array([[0, 1], [2, 3]], np.int64), "i")
    attrs = {} if reduction is None else {"reduction": reduction}
    node = helper.make_node(
        "ScatterElements", ["x", "i", "u"], ["y"], name="scatter_el", axis=1, **attrs
    )
    return _model([node], [data, upd], [idx], opset=opset)


def roi_align() -> onnx.ModelProto:
    rois = numpy_helper.from_array(np.array([[0, 0, 4, 4]], np.float32), "rois")
    batch = numpy_helper.from_array(np.array([0], np.int64), "batch")
    node = helper.make_node(
        "RoiAlign", ["x", "rois", "batch"], ["y"], name="roi", output_height=2, output_width=2
    )
    return _model([node], [_x()], [rois, batch], opset=16)


def clean() -> onnx.ModelProto:
    """Conv + Relu + nearest asymmetric Resize with sizes (as torch exports it): nothing any target refuses."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    sizes = numpy_helper.from_array(np.array([1, 4, 12, 12], np.int64), "sizes")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node(
            "Resize",
            ["r", "", "", "sizes"],
            ["y"],
            name="resize",
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
    ]
    return _model(nodes, [_x()], [w, sizes], opset=11)


@pytest.fixture
def models() -> SimpleNamespace:
    return SimpleNamespace(
        resize=resize,
        upsample=upsample,
        gather_elements=gather_elements,
        scatter_nd=scatter_nd,
        unary=unary,
        clean=clean,
        scatter_elements=scatter_elements,
        roi_align=roi_align,
    )
