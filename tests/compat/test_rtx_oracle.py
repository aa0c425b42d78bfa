"""Lint(tensorrt-rtx) against the real TensorRT-RTX parser on cases where they used to disagree.

Each case: a small model, the rules lint should report for tensorrt-rtx ([] = accepted), and
(through `test_rtx_parser_and_builder_agree`) whether tensorrt_rtx parses and builds it.
Found by sweeping Resize modes x coordinate modes x nearest modes x scales/sizes x opsets
11-19 x static/dynamic shapes, Scatter*, GatherElements and If against tensorrt_rtx 1.7.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.compat import lint_model


def _model(nodes, inputs, inits=(), opset=13) -> onnx.ModelProto:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [out], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _x(shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def _resize(mode, *, scales=None, sizes=None, **attrs) -> onnx.ModelProto:
    """Resize of a 1x3x8x8 input with constant scales or sizes."""
    if sizes is not None:
        init, ins = (
            numpy_helper.from_array(np.array(sizes, np.int64), "sizes"),
            ["x", "", "", "sizes"],
        )
    else:
        init, ins = (
            numpy_helper.from_array(np.array(scales, np.float32), "scales"),
            ["x", "", "scales"],
        )
    node = helper.make_node("Resize", ins, ["y"], name="resize", mode=mode, **attrs)
    return _model([node], [_x()], [init])


def _scales_from_int_input(dtype=TensorProto.INT64, cast_from=None) -> onnx.ModelProto:
    """scales = Cast(graph input `s`); with cast_from, `s` is float and cast to int first."""
    nodes = []
    src = "s"
    if cast_from is not None:
        nodes.append(helper.make_node("Cast", ["s"], ["si"], to=TensorProto.INT64))
        src = "si"
    nodes.append(helper.make_node("Cast", [src], ["scales"], to=TensorProto.FLOAT))
    nodes.append(
        helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="linear")
    )
    s = helper.make_tensor_value_info("s", cast_from or dtype, [4])
    return _model(nodes, [_x(), s])


def _if_with(branch_node: onnx.NodeProto) -> onnx.ModelProto:
    out = helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)
    then = helper.make_graph([branch_node], "then", [], [out])
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)],
    )
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
    return _model([node], [_x(), cond], [scales])


def _typed_input(elem: int) -> onnx.ModelProto:
    """y = Cast(i, float) + x for a graph input i of type `elem`."""
    nodes = [
        helper.make_node("Cast", ["i"], ["f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "f"], ["y"], name="add"),
    ]
    return _model(nodes, [_x((1, 4)), helper.make_tensor_value_info("i", elem, [1, 4])])


def _one_op(domain: str, op: str, **attrs) -> onnx.ModelProto:
    """y = domain::op(x); a custom domain gets an opset import."""
    model = _model(
        [helper.make_node(op, ["x"], ["y"], name="n", domain=domain, **attrs)], [_x((1, 4))]
    )
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def _uint8(
    *ops: str, dtype: int = TensorProto.UINT8, out: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    """Graph input i (1x4, `dtype`) through `ops` in a chain; "CastU8"/"CastF" are Casts to uint8/float."""
    nodes, src = [], "i"
    for k, op in enumerate(ops):
        dst = "y" if k == len(ops) - 1 else f"t{k}"
        if op.startswith("Cast"):
            nodes.append(
                helper.make_node(
                    "Cast",
                    [src],
                    [dst],
                    name=f"n{k}",
                    to=TensorProto.UINT8 if op == "CastU8" else TensorProto.FLOAT,
                )
            )
        elif op in ("Add", "Concat"):
            nodes.append(
                helper.make_node(
                    op, [src, "c"], [dst], name=f"n{k}", **({"axis": 0} if op == "Concat" else {})
                )
            )
        else:
            nodes.append(helper.make_node(op, [src], [dst], name=f"n{k}"))
        src = dst
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("i", dtype, [1, 4])],
        [helper.make_tensor_value_info("y", out, None)],
        [numpy_helper.from_array(np.ones((1, 4), helper.tensor_dtype_to_np_dtype(dtype)), "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _qdq(zero_point_dtype, zero_point: int = 0) -> onnx.ModelProto:
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "sc")
    zero = numpy_helper.from_array(np.array(zero_point, zero_point_dtype), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["y"], name="dq"),
    ]
    return _model(nodes, [_x((1, 4))], [scale, zero])


def _cast_chain(*to: int) -> onnx.ModelProto:
    """x -> Cast(to[0]) -> Cast(to[1]) ...; no value_info, as torch.onnx.export writes it."""
    nodes, src = [], "x"
    for k, t in enumerate(to):
        dst = "y" if k == len(to) - 1 else f"c{k}"
        nodes.append(helper.make_node("Cast", [src], [dst], name=f"cast{k}", to=t))
        src = dst
    return _model(nodes, [_x((1, 4))])


def _maxpool(outputs) -> onnx.ModelProto:
    node = helper.make_node(
        "MaxPool", ["x"], outputs, name="pool", kernel_shape=[2, 2], strides=[2, 2]
    )
    return _model([node], [_x()])


def _scatter_elements(data_shape, indices_shape) -> onnx.ModelProto:
    data = numpy_helper.from_array(np.zeros(data_shape, np.float32), "d")
    indices = numpy_helper.from_array(np.zeros(indices_shape, np.int64), "idx")
    node = helper.make_node("ScatterElements", ["d", "idx", "x"], ["y"], name="scatter", axis=1)
    return _model([node], [_x(indices_shape)], [data, indices])


def _net(nodes, inputs, outputs, inits=(), opset=13) -> onnx.ModelProto:
    """A model from (name, elem type, shape) inputs/outputs; initializers as numpy arrays."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in dict(inits).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset > 21 else 8
    return model


F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _axes_op(op: str, axes_as: str, opset: int = 18) -> onnx.ModelProto:
    """op(x, axes) with axes = [1] from an initializer or a graph input (as the node tests do)."""
    inputs = [("x", F, [2, 1, 4])]
    inits = {}
    if axes_as == "input":
        inputs.append(("axes", I64, [1]))
    else:
        inits["axes"] = np.array([1], np.int64)
    node = helper.make_node(op, ["x", "axes"], ["y"], name="n")
    return _net([node], inputs, [("y", F, None)], inits, opset)


def _dropout_training_input(constant: bool | None = None) -> onnx.ModelProto:
    """Dropout with training_mode from a graph input, or a constant True/False."""
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="n")
    inputs = [("x", F, [2, 4])]
    inits = {"r": np.array(0.5, np.float32)}
    if constant is None:
        inputs.append(("t", TensorProto.BOOL, []))
    else:
        inits["t"] = np.array(constant)
    return _net([node], inputs, [("y", F, None)], inits, 13)


def _onehot(depth_as: str, depth_type: int = I64) -> onnx.ModelProto:
    inputs = [("i", I64, [3])]
    inits = {"v": np.array([0, 1], np.float32)}
    if depth_as == "input":
        inputs.append(("d", depth_type, []))
    else:
        inits["d"] = np.array(5, np.int64)
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"], name="n")
    return _net([node], inputs, [("y", F, None)], inits, 13)


def _cast_to(to: int, opset: int = 25) -> onnx.ModelProto:
    node = helper.make_node("Cast", ["x"], ["y"], name="cast", to=to)
    return _net([node], [("x", F, [2, 4])], [("y", to, [2, 4])], (), opset)


def _qdq_fp8() -> onnx.ModelProto:
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
    ]
    z = numpy_helper.from_array(np.zeros(1, np.float32), "z")
    z.data_type, z.ClearField("float_data")
    z = helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0])
    model = _net(nodes, [("x", F, [2, 4])], [("y", F, None)], {"s": np.array(0.5, np.float32)})
    model.graph.initializer.append(z)
    return model


def _string_equal() -> onnx.ModelProto:
    node = helper.make_node("Equal", ["a", "b"], ["y"], name="eq")
    s = TensorProto.STRING
    return _net([node], [("a", s, [2]), ("b", s, [2])], [("y", TensorProto.BOOL, [2])])


def _sequence_io() -> onnx.ModelProto:
    seq = helper.make_tensor_sequence_value_info("s", F, None)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"], name="id")],
        "g",
        [seq],
        [helper.make_tensor_sequence_value_info("t", F, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    return model


def _layernorm(outputs) -> onnx.ModelProto:
    node = helper.make_node("LayerNormalization", ["x", "sc", "b"], outputs, name="ln", axis=-1)
    inits = {"sc": np.ones(4, np.float32), "b": np.zeros(4, np.float32)}
    return _net([node], [("x", F, [2, 4])], [(o, F, None) for o in outputs], inits, 17)


def _pool(op: str, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="pool", kernel_shape=[2, 2], **attrs)
    return _net([node], [("x", F, [1, 1, 8, 8])], [("y", F, None)], (), 18)


def _nms() -> onnx.ModelProto:
    inits = {
        "m": np.array([2], np.int64),
        "iou": np.array([0.5], np.float32),
        "sc": np.array([0.0], np.float32),
    }
    node = helper.make_node("NonMaxSuppression", ["b", "s", "m", "iou", "sc"], ["y"], name="nms")
    inputs = [("b", F, [1, 6, 4]), ("s", F, [1, 1, 6])]
    return _net([node], inputs, [("y", I64, None)], inits, 13)


def _attention(q=(2, 4, 24), kv=(2, 6, 24), heads=(3, 3), mask=False, **attrs) -> onnx.ModelProto:
    """Attention-23 with static Q/K/V; 3-D inputs carry head counts as attributes."""
    if len(q) == 3:
        attrs.update(q_num_heads=heads[0], kv_num_heads=heads[1])
    ins = ["q", "k", "v"] + (["m"] if mask else [])
    node = helper.make_node("Attention", ins, ["y"], name="attn", **attrs)
    inputs = [("q", F, list(q)), ("k", F, list(kv)), ("v", F, list(kv))]
    if mask:
        inputs.append(("m", F, [q[-2], kv[-2]]))
    return _net([node], inputs, [("y", F, None)], (), 23)


def _int8_op(op: str, empty=False, elem=TensorProto.INT8, min_input=False, **attrs):
    """Clip(a) / Clip(a, "", "") / Clip(a, min input) / Mod(a, b) on 1-D tensors of `elem`."""
    i8 = elem
    ins = ["a", "b"] if op == "Mod" else ["a", "", ""] if empty else ["a"]
    if min_input:
        ins = ["a", "b"]
    node = helper.make_node(op, ins, ["y"], name="n", **attrs)
    inputs = [("a", i8, [4])] + ([("b", i8, [4] if op == "Mod" else [])] if len(ins) == 2 else [])
    return _net([node], inputs, [("y", i8, [4])], (), 13)


def _batchnorm_training() -> onnx.ModelProto:
    c = np.ones(3, np.float32)
    inits = {"sc": c, "b": c * 0, "mean": c * 0, "var": c}
    node = helper.make_node(
        "BatchNormalization", ["x", "sc", "b", "mean", "var"], ["y"], name="bn", training_mode=1
    )
    return _net([node], [("x", F, [2, 3, 4])], [("y", F, None)], inits, 15)


def _opset6_add(shape_b=(2, 4)) -> onnx.ModelProto:
    """Add at opset 6 (old broadcasting rules), equal or different ranks."""
    node = helper.make_node("Add", ["a", "b"], ["y"], name="add")
    return _net([node], [("a", F, [2, 4]), ("b", F, list(shape_b))], [("y", F, None)], (), 6)


def _range(dtype: int = F, as_input: bool = True) -> onnx.ModelProto:
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    values = {"start": 0, "limit": 5, "delta": 1}
    node = helper.make_node("Range", list(values), ["y"], name="range")
    if as_input:
        return _net([node], [(n, dtype, []) for n in values], [("y", dtype, None)], (), 13)
    inits = {n: np.array(v, np_type) for n, v in values.items()}
    return _net([node], [], [("y", dtype, None)], inits, 13)


def _axes_from_shape() -> onnx.ModelProto:
    """ReduceMean over Range(0, Size(Shape(x)), 1), as RMSNormalization's function body writes it."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Size", ["s"], ["rank"]),
        helper.make_node("Range", ["zero", "rank", "one"], ["axes"]),
        helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean"),
    ]
    inits = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64)}
    return _net(nodes, [("x", F, [2, 4])], [("y", F, None)], inits, 18)


def _qdq_int4(zero_point_as: str) -> onnx.ModelProto:
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
    ]
    inputs = [("x", F, [2, 4])]
    if zero_point_as == "input":
        inputs.append(("z", TensorProto.INT4, []))
    model = _net(nodes, inputs, [("y", F, None)], {"s": np.array(0.5, np.float32)}, 21)
    if zero_point_as != "input":
        model.graph.initializer.append(helper.make_tensor("z", TensorProto.INT4, [], [0]))
    return model


def _tensor_scatter(cache_shape, mode="linear") -> onnx.ModelProto:
    update = list(cache_shape)
    update[-2] = 1
    node = helper.make_node("TensorScatter", ["c", "u"], ["y"], name="ts", mode=mode)
    inputs = [("c", F, list(cache_shape)), ("u", F, update)]
    return _net([node], inputs, [("y", F, None)], (), 24)


# Found by tools/conformance.py (the ONNX backend node tests against the RTX parser/builder).
NODE_TEST_CASES = [
    ("ReduceSum axes graph input", lambda: _axes_op("ReduceSum", "input"), ["input-not-constant"]),
    ("ReduceMax axes graph input", lambda: _axes_op("ReduceMax", "input"), ["input-not-constant"]),
    ("ReduceSum axes initializer", lambda: _axes_op("ReduceSum", "init"), []),
    ("Unsqueeze axes graph input", lambda: _axes_op("Unsqueeze", "input"), ["input-not-constant"]),
    ("Squeeze axes initializer", lambda: _axes_op("Squeeze", "init"), []),
    ("Dropout training_mode graph input", _dropout_training_input, ["input-not-constant"]),
    ("Dropout training_mode True", lambda: _dropout_training_input(True), ["input-not-constant"]),
    ("Dropout training_mode False", lambda: _dropout_training_input(False), []),
    ("OneHot float depth graph input", lambda: _onehot("input", F), ["input-not-constant"]),
    ("OneHot int64 depth graph input", lambda: _onehot("input"), []),
    ("OneHot depth initializer", lambda: _onehot("init"), []),
    *[
        (
            f"Cast to {TensorProto.DataType.Name(t)}",
            lambda t=t: _cast_to(t),
            ["tensor-type-unsupported"],
        )
        for t in (
            TensorProto.FLOAT8E5M2,
            TensorProto.FLOAT8E4M3FNUZ,
            TensorProto.FLOAT8E8M0,
            TensorProto.UINT4,
            TensorProto.INT2,
        )
    ],
    *[
        (
            f"Cast to {TensorProto.DataType.Name(t)} (outside Q/DQ)",
            lambda t=t: _cast_to(t),
            ["quantized-type-outside-qdq"],
        )
        for t in (TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1)
    ],
    ("FP8 Q/DQ", _qdq_fp8, []),
    ("Equal on strings", _string_equal, ["tensor-type-unsupported"]),
    ("sequence input and output", _sequence_io, ["io-type-unsupported", "io-type-unsupported"]),
    ("LayerNormalization Y only", lambda: _layernorm(["y"]), []),
    (
        "LayerNormalization Y, Mean, InvStdDev",
        lambda: _layernorm(["y", "m", "r"]),
        ["layernorm-outputs"],
    ),
    ("MaxPool dilations 2", lambda: _pool("MaxPool", dilations=[2, 2]), ["pool-dilations"]),
    ("AveragePool dilations 1", lambda: _pool("AveragePool", dilations=[1, 1]), []),
    ("LpPool p=3", lambda: _pool("LpPool", p=3), ["lp-order"]),
    ("LpPool p=1", lambda: _pool("LpPool", p=1), []),
    ("NonMaxSuppression", _nms, ["nms-builder"]),
    ("Attention 3-D", _attention, []),
    ("Attention 3-D causal", lambda: _attention(is_causal=1), ["attention-limits"]),
    ("Attention 3-D softcap", lambda: _attention(softcap=2.0), ["attention-limits"]),
    ("Attention 3-D mask", lambda: _attention(mask=True), ["attention-limits"]),
    ("Attention 3-D GQA", lambda: _attention(q=(2, 4, 72), heads=(9, 3)), ["attention-limits"]),
    ("Attention 4-D", lambda: _attention(q=(2, 3, 4, 8), kv=(2, 3, 6, 8)), ["attention-limits"]),
    ("Clip int8 empty min", lambda: _int8_op("Clip", empty=True), ["clip-int8"]),
    ("Clip int8", lambda: _int8_op("Clip"), []),
    ("Mod int8", lambda: _int8_op("Mod"), ["mod-integer-type"]),
    ("Mod int8 fmod=1", lambda: _int8_op("Mod", fmod=1), ["mod-integer-type"]),
    ("Mod int32", lambda: _int8_op("Mod", elem=TensorProto.INT32), []),
    ("BatchNormalization training_mode=1", _batchnorm_training, ["batchnorm-training"]),
    ("Equal on uint8 graph inputs", lambda: _uint8_equal(), []),
    ("Add at opset 6, equal ranks", _opset6_add, ["pre-opset7-broadcast"]),
    ("Add at opset 6, ranks 2 and 1", lambda: _opset6_add((4,)), ["pre-opset7-broadcast"]),
    ("float Range from graph inputs", _range, ["range-inputs"]),
    ("float Range from initializers", lambda: _range(as_input=False), []),
    ("int64 Range from graph inputs", lambda: _range(I64), []),
    ("float16 Range", lambda: _range(TensorProto.FLOAT16, as_input=False), ["range-inputs"]),
    ("ReduceMean axes from Size(Shape(x))", _axes_from_shape, ["input-not-constant"]),
    ("int4 Q/DQ, zero point initializer", lambda: _qdq_int4("init"), []),
    (
        "int4 Q/DQ, zero point graph input",
        lambda: _qdq_int4("input"),
        ["quantized-type-outside-qdq", "quantized-type-outside-qdq"],
    ),
    ("Clip int8 min graph input", lambda: _int8_op("Clip", min_input=True), ["clip-int8"]),
    ("TensorScatter 4-D linear", lambda: _tensor_scatter((1, 2, 4, 8)), []),
    ("TensorScatter 3-D", lambda: _tensor_scatter((2, 4, 8)), ["tensor-scatter-limits"]),
    (
        "TensorScatter circular",
        lambda: _tensor_scatter((1, 2, 4, 8), "circular"),
        ["tensor-scatter-limits"],
    ),
]


def _uint8_equal() -> onnx.ModelProto:
    u8 = TensorProto.UINT8
    node = helper.make_node("Equal", ["a", "b"], ["y"], name="eq")
    return _net([node], [("a", u8, [4]), ("b", u8, [4])], [("y", TensorProto.BOOL, [4])])


TFNN = "tf_half_pixel_for_nn"
X2 = [1, 1, 2, 2]

# (label, model factory, rules lint reports for tensorrt-rtx)
CASES = [
    # tf_half_pixel_for_nn: only nearest_mode=round_prefer_floor, only with scales
    (
        "tfnn nearest scales default nearest_mode",
        lambda: _resize("nearest", scales=X2, coordinate_transformation_mode=TFNN),
        [],
    ),
    (
        "tfnn nearest scales round_prefer_floor",
        lambda: _resize(
            "nearest",
            scales=X2,
            coordinate_transformation_mode=TFNN,
            nearest_mode="round_prefer_floor",
        ),
        [],
    ),
    *[
        (
            f"tfnn {mode} scales nearest_mode={nm}",
            lambda mode=mode, nm=nm: _resize(
                mode, scales=X2, coordinate_transformation_mode=TFNN, nearest_mode=nm
            ),
            ["resize-tf-half-pixel-for-nn"],
        )
        for mode in ("nearest", "linear", "cubic")
        for nm in ("floor", "ceil", "round_prefer_ceil")
    ],
    *[
        (
            f"tfnn {mode} sizes",
            lambda mode=mode: _resize(
                mode, sizes=[1, 3, 16, 16], coordinate_transformation_mode=TFNN
            ),
            ["resize-tf-half-pixel-for-nn"],
        )
        for mode in ("nearest", "linear", "cubic")
    ],
    (
        "half_pixel nearest sizes floor",
        lambda: _resize("nearest", sizes=[1, 3, 16, 16], nearest_mode="floor"),
        [],
    ),
    # constant scales: cubic on the innermost 2 axes only, linear on the innermost 3
    (
        "cubic scales [1,2,2,2]",
        lambda: _resize("cubic", scales=[1, 2, 2, 2]),
        ["resize-scaled-axes"],
    ),
    (
        "cubic scales [2,1,2,2]",
        lambda: _resize("cubic", scales=[2, 1, 2, 2]),
        ["resize-scaled-axes"],
    ),
    ("cubic scales [1,1,2,2]", lambda: _resize("cubic", scales=X2), []),
    ("cubic sizes [1,6,16,16]", lambda: _resize("cubic", sizes=[1, 6, 16, 16]), []),
    (
        "linear scales [2,1,2,2]",
        lambda: _resize("linear", scales=[2, 1, 2, 2]),
        ["resize-scaled-axes"],
    ),
    ("linear scales [1,2,2,2]", lambda: _resize("linear", scales=[1, 2, 2, 2]), []),
    ("nearest scales [2,2,2,2]", lambda: _resize("nearest", scales=[2, 2, 2, 2]), []),
    # scales computed from an integer graph input: a shape tensor, accepted
    ("scales = Cast(int64 input)", lambda: _scales_from_int_input(TensorProto.INT64), []),
    ("scales = Cast(int32 input)", lambda: _scales_from_int_input(TensorProto.INT32), []),
    (
        "scales = Cast(Cast(float input))",
        lambda: _scales_from_int_input(cast_from=TensorProto.FLOAT),
        ["resize-scales-not-constant"],
    ),
    # graph inputs of types TensorRT has no DataType for (int32/int64/bool/float16 it has)
    *[
        (
            f"{TensorProto.DataType.Name(t)} graph input",
            lambda t=t: _typed_input(t),
            ["tensor-type-unsupported"],
        )
        for t in (TensorProto.INT16, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64)
    ],
    *[
        (f"{TensorProto.DataType.Name(t)} graph input", lambda t=t: _typed_input(t), [])
        for t in (TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT16)
    ],
    # the parser ignores the domain: an op name it imports is imported, any other needs a plugin
    *[
        (f"{d or 'default'}::{op}", lambda d=d, op=op: _one_op(d, op), [])
        for d, op in (("com.microsoft", "Relu"), ("custom", "Sigmoid"))
    ],
    # experimental ops of old opsets the parser still imports (it wants their attributes)
    *[
        (f"default::{op}", lambda op=op: _one_op("", op, alpha=1.0, beta=1.0), [])
        for op in ("ScaledTanh", "ParametricSoftplus")
    ],
    *[
        (f"{d or 'default'}::{op}", lambda d=d, op=op: _one_op(d, op), ["plugin-required"])
        for d, op in (
            ("com.microsoft", "FastGelu"),
            ("com.microsoft", "QuickGelu"),
            ("mydomain", "Foo"),
            ("mydomain", "Unique"),
            ("", "NotAnOnnxOp"),
        )
    ],
    # uint8: only graph inputs read by Cast/Identity and graph outputs; no uint8 Q/DQ
    ("uint8 input -> Cast float", lambda: _uint8("CastF"), []),
    ("uint8 input -> Identity -> output", lambda: _uint8("Identity", out=TensorProto.UINT8), []),
    (
        "float input -> Cast uint8 -> output",
        lambda: _uint8("CastU8", dtype=TensorProto.FLOAT, out=TensorProto.UINT8),
        [],
    ),
    # (the uint8 result is an intermediate too: both nodes are reported)
    (
        "uint8 input -> Add -> Cast",
        lambda: _uint8("Add", "CastF"),
        ["uint8-tensor", "uint8-tensor"],
    ),
    (
        "uint8 input -> Concat -> Cast",
        lambda: _uint8("Concat", "CastF"),
        ["uint8-tensor", "uint8-tensor"],
    ),
    ("uint8 input -> Identity -> Cast", lambda: _uint8("Identity", "CastF"), ["uint8-tensor"]),
    (
        "float -> Cast uint8 -> Cast float",
        lambda: _uint8("CastU8", "CastF", dtype=TensorProto.FLOAT),
        ["uint8-tensor"],
    ),
    (
        "Q/DQ with uint8 zero point 128",
        lambda: _qdq(np.uint8, 128),
        ["uint8-tensor", "uint8-tensor"],
    ),
    ("Q/DQ with uint8 zero point 0", lambda: _qdq(np.uint8), []),
    ("Q/DQ with int8 zero point 0", lambda: _qdq(np.int8), []),
    # found on torch.onnx.export models: Cast outputs carry no value_info, so the type is the Cast's `to`
    (
        "Cast to uint8 -> Cast float",
        lambda: _cast_chain(TensorProto.UINT8, TensorProto.FLOAT),
        ["uint8-tensor"],
    ),
    (
        "Cast to int16 -> Cast float",
        lambda: _cast_chain(TensorProto.INT16, TensorProto.FLOAT),
        ["tensor-type-unsupported", "tensor-type-unsupported"],
    ),
    ("Cast to int8 -> Cast float", lambda: _cast_chain(TensorProto.INT8, TensorProto.FLOAT), []),
    # MaxPool(return_indices=True): a second output is refused, used or not
    ("MaxPool", lambda: _maxpool(["y"]), []),
    ("MaxPool with Indices output", lambda: _maxpool(["y", "i"]), ["maxpool-indices"]),
    # scatter_add at opset 13: more indices than data slots along the axis
    (
        "ScatterElements indices 1x4 into 1x2",
        lambda: _scatter_elements((1, 2), (1, 4)),
        ["scatter-elements-indices-shape"],
    ),
    ("ScatterElements indices 1x2 into 1x4", lambda: _scatter_elements((1, 4), (1, 2)), []),
    *NODE_TEST_CASES,
    # inside an If branch (last: test_tensorrt_10_unchanged_by_rtx_facts leaves it out)
    (
        "If with tfnn floor Resize",
        lambda: _if_with(
            helper.make_node(
                "Resize",
                ["x", "", "sc"],
                ["t_out"],
                mode="nearest",
                coordinate_transformation_mode=TFNN,
                nearest_mode="floor",
            )
        ),
        ["resize-tf-half-pixel-for-nn"],
    ),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("label", "make", "expected"), CASES, ids=IDS)
def test_rtx_lint(label, make, expected):
    assert [f.rule for f in lint_model(make(), "tensorrt-rtx")] == expected


@pytest.mark.parametrize(("label", "make", "expected"), CASES[:-1], ids=IDS[:-1])
def test_tensorrt_10_unchanged_by_rtx_facts(label, make, expected):
    # The new Resize facts are RTX-only (checked here); other targets keep their rows.
    rules = [f.rule for f in lint_model(make(), "tensorrt-10")]
    assert "resize-tf-half-pixel-for-nn" not in rules and "resize-scaled-axes" not in rules


def _rtx_accepts(model: onnx.ModelProto) -> tuple[bool, str]:
    """Parse with tensorrt_rtx as build/network.py does, then build with a minimal config."""
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(model.SerializeToString())
    if not ok or parser.num_errors:
        return False, "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
    config = builder.create_builder_config()
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.is_shape_tensor:
            profile = profile or builder.create_optimization_profile()
            values = [1] * (tensor.shape[0] if len(tensor.shape) else 1)
            profile.set_shape_input(tensor.name, values, values, values)
    if profile is not None:
        config.add_optimization_profile(profile)
    return builder.build_serialized_network(network, config) is not None, "build failed"


@pytest.mark.trt
@pytest.mark.parametrize(("label", "make", "expected"), CASES, ids=IDS)
def test_rtx_parser_and_builder_agree(label, make, expected):
    ok, why = _rtx_accepts(make())
    assert ok == (not expected), f"{label}: RTX ok={ok} ({why[:160]}), lint expects {expected}"
