"""fix-resize: torch-exported fixtures, hand-built edge cases, PP-OCR det, and random Resize graphs.

Every rewrite is checked against ONNX Runtime on the original model (max abs diff <= 1e-5;
in practice 0), at the exported shape and, for dynamic models, at another one; the
TensorRT-RTX parser and builder get the fixed models. The fixtures come from
tests/models/export_resize.py (torch 2.13; not run here).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.passes import PassManager
from onnx2trt_lib.passes.fix_resize import DEFAULT_ACCEPTED_MODES, FixResizePass

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "models"
FIXTURE_FILES = sorted(FIXTURES.glob("resize_*.onnx"))
_NAME = re.compile(
    r"resize_(?P<mode>\w+?)_(?P<scale>[\dp]+x[\dp]+)(_ac(?P<ac>[01]))?_(?P<exp>\w+?)_(?P<dyn>dyn|static)\.onnx"
)
ALL_INTERP = frozenset({"nearest", "linear", "cubic"})


# -- helpers ------------------------------------------------------------------------------------
def fix(model: onnx.ModelProto, **options):
    """Run the pass through the PassManager (cleanup included); returns (model, PassResult)."""
    out, report = PassManager([FixResizePass(**options)]).run(model)
    return out, report.records[0].result


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def refused_resizes(
    model: onnx.ModelProto, accepted: frozenset[str], interp: frozenset[str]
) -> list[str]:
    """Resize nodes still given non-empty scales with a refused coordinate mode (read from the proto)."""
    consts = constants(model)
    bad = []
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("mode", b"nearest").decode()
        ctm = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
        scales = node.input[2] if len(node.input) > 2 else ""
        has_scales = bool(scales) and (scales not in consts or consts[scales].size > 0)
        if has_scales and mode in interp and ctm not in accepted:
            bad.append(node.name)
    return bad


def fixture_case(path: Path) -> dict:
    """The options that make a fixture a positive case, and what the pass should do with it."""
    m = _NAME.fullmatch(path.name)
    assert m, path.name
    scales = [float(s.replace("p", ".")) for s in m["scale"].split("x")]
    dynamic = m["dyn"] == "dyn"
    if m["mode"] == "nearest":  # asymmetric: rewritten only for a target that refuses it
        options = {"accepted_modes": frozenset({"half_pixel"}), "interp_modes": ALL_INTERP}
        scale_free = False
    elif m["ac"] == "1":  # align_corners: the seed's case, refused by the 7.1 rule
        options = {}
        scale_free = True
    else:  # half_pixel: refused by the tensorrt-7.0 rule (asymmetric only)
        options = {"accepted_modes": frozenset({"asymmetric"})}
        scale_free = False
    exact = scale_free or not dynamic or all(s.is_integer() for s in scales)
    return {
        "options": options,
        "dynamic": dynamic,
        "rewritten": exact,
        "mode": m["mode"],
        "ac": m["ac"],
    }


def feeds_for(shape) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)}


def resize_model(
    *,
    opset: int,
    in_shape,
    scales,
    mode: str = "linear",
    ctm: str = "align_corners",
    scales_as_input: bool = False,
    roi=None,
    **attrs,
) -> onnx.ModelProto:
    """x -> Resize(scales) -> y, built with onnx.helper; dims given as str are dynamic."""
    inits = []
    if roi is not None:
        inits.append(numpy_helper.from_array(np.asarray(roi, np.float32), "roi"))
        roi_name = "roi"
    elif opset < 13:
        inits.append(numpy_helper.from_array(np.zeros(0, np.float32), "roi"))
        roi_name = "roi"
    else:
        roi_name = ""
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))]
    if scales_as_input:
        graph_inputs.append(
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [len(scales)])
        )
    else:
        inits.append(numpy_helper.from_array(np.asarray(scales, np.float32), "scales"))
    node = helper.make_node(
        "Resize",
        ["x", roi_name, "scales"],
        ["y"],
        name="resize",
        mode=mode,
        coordinate_transformation_mode=ctm,
        **attrs,
    )
    graph = helper.make_graph(
        [node],
        "resize",
        graph_inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(in_shape))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# -- torch-exported fixtures ------------------------------------------------------------------------
def test_fixture_grid_is_present():
    assert len(FIXTURE_FILES) >= 20, (
        f"fixtures missing under {FIXTURES}; run tests/models/export_resize.py"
    )
    assert sum(f.stat().st_size for f in FIXTURE_FILES) < 2_000_000


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_rewrite_is_exact(path: Path, assert_same_outputs):
    case = fixture_case(path)
    original = onnx.load(str(path))
    before = original.SerializeToString()
    fixed, res = fix(original, **case["options"])
    accepted = case["options"].get("accepted_modes", DEFAULT_ACCEPTED_MODES)
    interp = case["options"].get("interp_modes", frozenset({"linear", "cubic"}))
    if (
        not res.modified
    ):  # (a modified run goes through graph-surgeon's export, see the lead's notes)
        assert original.SerializeToString() == before, "the input model was modified"
    if case["rewritten"]:
        assert res.modified and res.counts["scales_to_sizes"] == 1, res
        assert not res.skipped
        assert refused_resizes(fixed, accepted, interp) == []
        assert refused_resizes(original, accepted, interp) != []
        onnx.checker.check_model(fixed)
        shape_nodes = [n for n in fixed.graph.node if n.op_type == "Shape"]
        # static dims give constant sizes; dynamic ones are computed in the graph
        assert bool(shape_nodes) == case["dynamic"]
    else:
        assert not res.modified and len(res.skipped) == 1
        assert "dynamic" in res.skipped[0].reason and "1.5" in res.skipped[0].reason
        assert fixed is original
    assert assert_same_outputs(original, fixed, feeds_for((1, 3, 8, 8)), atol=1e-5) <= 1e-5
    if case["dynamic"]:
        assert_same_outputs(original, fixed, feeds_for((1, 3, 12, 20)), atol=1e-5)
        assert_same_outputs(original, fixed, feeds_for((1, 3, 5, 7)), atol=1e-5)
    _, again = fix(fixed, **case["options"])
    assert not again.modified and dict(again.counts) == {
        "upsample_to_resize": 0,
        "scales_to_sizes": 0,
        "symmetric_to_half_pixel": 0,
        "opset_raised": 0,
    }


@pytest.mark.parametrize(
    "path", [p for p in FIXTURE_FILES if fixture_case(p)["options"]], ids=lambda p: p.stem
)
def test_fixture_accepted_by_default_target_is_untouched(path: Path):
    """half_pixel and nearest/asymmetric resizes are fine for the 7.1 rule: no match, same object back."""
    original = onnx.load(str(path))
    fixed, res = fix(original)
    assert not res.modified and not res.skipped
    assert fixed is original


@pytest.mark.trt
@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_rtx_parses_and_builds(path: Path, rtx_parse_and_build):
    case = fixture_case(path)
    fixed, _ = fix(onnx.load(str(path)), **case["options"])
    ok, errors = rtx_parse_and_build(
        fixed,
        shapes={"x": [(1, 3, 4, 4), (1, 3, 8, 8), (1, 3, 32, 32)]} if case["dynamic"] else None,
    )
    assert ok, errors


# -- a real model from a PyPI wheel ------------------------------------------------------------------
def _ppocr_det() -> onnx.ModelProto:
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    path = Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is not in this rapidocr-onnxruntime wheel")
    return onnx.load(str(path))


def test_ppocr_det(assert_same_outputs, rtx_parse_and_build):
    model = _ppocr_det()
    # nearest/asymmetric everywhere: nothing to do for any target
    same, res = fix(model)
    assert same is model and not res.modified
    # a target refusing asymmetric nearest: the 6 FPN upsamplings (scale 2, dynamic H/W) get sizes
    options = {"accepted_modes": frozenset({"half_pixel"}), "interp_modes": ALL_INTERP}
    fixed, res = fix(model, **options)
    assert res.counts["scales_to_sizes"] == 6 and not res.skipped
    assert refused_resizes(fixed, options["accepted_modes"], ALL_INTERP) == []
    for shape in [(1, 3, 64, 64), (1, 3, 96, 160)]:
        assert_same_outputs(model, fixed, feeds_for(shape), atol=1e-5)
    assert not fix(fixed, **options)[1].modified
    pytest.importorskip("tensorrt_rtx")
    ok, errors = rtx_parse_and_build(
        fixed, shapes={"x": [(1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 128, 128)]}
    )
    assert ok, errors


# -- Upsample (opset 7-9) ------------------------------------------------------------------------------
def upsample_model(opset: int, mode: str, scales, extra_nodes=()) -> onnx.ModelProto:
    inits = []
    if opset >= 9:
        inits.append(numpy_helper.from_array(np.asarray(scales, np.float32), "scales"))
        node = helper.make_node("Upsample", ["x", "scales"], ["u"], name="up", mode=mode)
    else:
        node = helper.make_node(
            "Upsample", ["x"], ["u"], name="up", mode=mode, scales=[float(s) for s in scales]
        )
    nodes = [node, helper.make_node("Relu", ["u"], ["y"], name="relu"), *extra_nodes]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)]
    outputs += [
        helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, [None] * 4)
        for n in extra_nodes
    ]
    graph = helper.make_graph(
        nodes,
        "up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize(
    ("mode", "scales"),
    [("nearest", [1, 1, 2, 3]), ("linear", [1, 1, 2, 2]), ("nearest", [1, 1, 1.5, 2.5])],
)
def test_upsample_becomes_resize(opset, mode, scales, assert_same_outputs, rtx_parse_and_build):
    model = upsample_model(opset, mode, scales)
    fixed, res = fix(model)
    assert dict(res.counts) == {
        "upsample_to_resize": 1,
        "scales_to_sizes": 0,
        "symmetric_to_half_pixel": 0,
        "opset_raised": 1,
    }
    ops = [n.op_type for n in fixed.graph.node]
    assert "Upsample" not in ops and "Resize" in ops
    assert {o.domain: o.version for o in fixed.opset_import}[""] == 10
    onnx.checker.check_model(fixed)
    assert_same_outputs(model, fixed, feeds_for((1, 2, 5, 6)), atol=1e-5)
    assert not fix(fixed)[1].modified
    if mode == "linear":
        pytest.importorskip("tensorrt_rtx")
        ok, errors = rtx_parse_and_build(fixed)
        assert ok, errors


def test_upsample_opset7_ir3_with_type_only_changed_ops(assert_same_outputs):
    """Opset 7 / IR 3 (initializers must be graph inputs): MatMul and Flatten change only types by 10."""
    flatten = helper.make_node("Flatten", ["x"], ["f"], name="flatten", axis=1)
    transpose = helper.make_node("Transpose", ["f"], ["ft"], name="transpose")
    matmul = helper.make_node("MatMul", ["f", "ft"], ["g"], name="matmul")
    model = upsample_model(7, "nearest", [1, 1, 2, 2], extra_nodes=[flatten, transpose, matmul])
    del model.graph.output[1:]
    model.graph.output.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, [None] * 2))
    model.ir_version = 3
    onnx.checker.check_model(model)
    fixed, res = fix(model)
    assert res.counts["upsample_to_resize"] == 1 and res.counts["opset_raised"] == 1, res
    assert fixed.ir_version == 3 and not fixed.graph.initializer
    onnx.checker.check_model(fixed)
    assert_same_outputs(model, fixed, feeds_for((1, 2, 5, 6)), atol=1e-5)


def test_upsample_not_converted_when_opset_bump_changes_other_ops():
    slice_node = helper.make_node(
        "Slice", ["x"], ["s"], name="slice", starts=[0], ends=[1], axes=[1]
    )
    model = upsample_model(9, "nearest", [1, 1, 2, 2], extra_nodes=[slice_node])
    fixed, res = fix(model)
    assert not res.modified and fixed is model
    assert (
        len(res.skipped) == 1
        and "Slice" in res.skipped[0].reason
        and "version_converter" in res.skipped[0].reason
    )


# -- hand-built edge cases (all opsets 11 .. newest) -----------------------------------------------
def test_no_resize_is_no_match():
    model = resize_model(opset=13, in_shape=[1, 2, 4, 4], scales=[1, 1, 2, 2])
    graph = gs.import_onnx(model)
    graph.nodes[0].op = "Relu"
    graph.nodes[0].inputs = graph.nodes[0].inputs[:1]
    plain = gs.export_onnx(graph.cleanup())
    fixed, res = fix(plain)
    assert fixed is plain and not res.modified and not res.skipped and not any(res.counts.values())


def test_resize_with_sizes_is_untouched():
    model = resize_model(opset=13, in_shape=[1, 2, 4, 4], scales=[1, 1, 2, 2])
    model.graph.node[0].input[2] = ""
    model.graph.node[0].input.append("sizes")
    model.graph.initializer.append(
        numpy_helper.from_array(np.array([1, 2, 7, 9], np.int64), "sizes")
    )
    fixed, res = fix(model)
    assert fixed is model and not res.modified and not res.skipped


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"opset": 18, "antialias": 1}, "antialias"),
        ({"opset": 18, "keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy"),
        (
            {"opset": 13, "ctm": "tf_crop_and_resize", "roi": [0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9]},
            "tf_crop_and_resize",
        ),
        ({"opset": 13, "scales_as_input": True}, "run time"),
        ({"opset": 13, "ctm": "half_pixel", "in_shape": [1, 2, 7, 7]}, "out/in"),
        ({"opset": 13, "ctm": "tf_half_pixel_for_nn", "mode": "nearest"}, "tf_half_pixel_for_nn"),
        ({"opset": 19, "ctm": "half_pixel_symmetric", "in_shape": [1, 2, 7, 7]}, "out/in"),
        ({"opset": 13, "ctm": "asymmetric", "in_shape": [1, 2, "h", "w"]}, "dynamic"),
        ({"opset": 13, "scales": [1, 1, 0, 1]}, "not all positive"),
    ],
    ids=[
        "antialias",
        "policy_not_larger",
        "tf_crop_and_resize",
        "scales_graph_input",
        "static_inexact",
        "tf_half_pixel_for_nn",
        "symmetric_inexact",
        "dynamic_fractional",
        "zero_scale",
    ],
)
def test_skips_what_it_cannot_keep_exact(kwargs, reason):
    kwargs = {"in_shape": [1, 2, 8, 8], "scales": [1, 1, 1.5, 1.5], **kwargs}
    model = resize_model(**kwargs)
    fixed, res = fix(
        model, accepted_modes=frozenset({"pytorch_half_pixel"}), interp_modes=ALL_INTERP
    )
    assert fixed is model and not res.modified
    assert (
        len(res.skipped) == 1 and res.skipped[0].node == "resize" and res.skipped[0].op == "Resize"
    )
    assert reason in res.skipped[0].reason, res.skipped[0].reason


EDGE_REWRITES = [
    {"opset": 18, "keep_aspect_ratio_policy": "stretch", "scales": [1, 1, 2, 3]},
    {"opset": 18, "axes": [2, 3], "scales": [1.5, 2]},
    {"opset": 18, "axes": [-1], "scales": [2.5], "in_shape": [1, 2, "h", 6]},
    {"opset": 19, "ctm": "half_pixel_symmetric", "scales": [1, 1, 1.5, 0.5]},
    {
        "opset": 11,
        "ctm": "pytorch_half_pixel",
        "mode": "nearest",
        "scales": [1, 1, 2, 3],
        "in_shape": [1, 2, "h", "w"],
    },
    {"opset": 21, "mode": "cubic", "scales": [1, 1, 0.5, 1.5], "in_shape": [1, "c", "h", "w"]},
    {
        "opset": 12,
        "mode": "linear",
        "scales": [1, 1, 0.5, 1.25],
        "in_shape": [1, 2, 8, 8],
        "roi": [0, 0, 0, 0, 1, 1, 1, 1],
    },
]
EDGE_IDS = [
    "policy_stretch",
    "axes",
    "negative_axes_dynamic",
    "half_pixel_symmetric",
    "pytorch_hp_op11_dynamic_int",
    "cubic_op21_dynamic_ac",
    "roi_ignored_op12",
]


@pytest.mark.parametrize("kwargs", EDGE_REWRITES, ids=EDGE_IDS)
def test_opset_attributes_rewritten_exactly(kwargs, assert_same_outputs):
    kwargs = {"in_shape": [1, 2, 8, 8], **kwargs}
    model = resize_model(**kwargs)
    fixed, res = fix(model, accepted_modes=frozenset({"asymmetric"}), interp_modes=ALL_INTERP)
    assert res.counts["scales_to_sizes"] == 1 and not res.skipped, res
    node = next(n for n in fixed.graph.node if n.op_type == "Resize")
    assert {a.name for a in node.attribute}.isdisjoint({"axes", "keep_aspect_ratio_policy"})
    onnx.checker.check_model(fixed)
    assert_same_outputs(
        model, fixed, feeds_for((1, 2, 8, 6 if kwargs.get("axes") == [-1] else 8)), atol=1e-5
    )
    if any(isinstance(d, str) for d in kwargs["in_shape"]):
        assert_same_outputs(
            model, fixed, feeds_for((1, 2, 12, 6 if kwargs.get("axes") == [-1] else 10)), atol=1e-5
        )
    assert not fix(fixed, accepted_modes=frozenset({"asymmetric"}), interp_modes=ALL_INTERP)[
        1
    ].modified


@pytest.mark.trt
@pytest.mark.parametrize("kwargs", EDGE_REWRITES, ids=EDGE_IDS)
def test_opset_attributes_rewritten_rtx_parses(kwargs, rtx_parse_and_build):
    model = resize_model(**{"in_shape": [1, 2, 8, 8], **kwargs})
    fixed, _ = fix(model, accepted_modes=frozenset({"asymmetric"}), interp_modes=ALL_INTERP)
    ok, errors = rtx_parse_and_build(fixed, dynamic_range=(2, 8, 16))
    assert ok, errors


@pytest.mark.parametrize("dynamic", [False, True])
def test_half_pixel_symmetric_becomes_half_pixel_with_scales(dynamic, assert_same_outputs):
    """Target accepting half_pixel with scales: only the mode changes (exact scales: offset term is 0)."""
    shape = [1, 2, "h", "w"] if dynamic else [1, 2, 6, 8]
    model = resize_model(
        opset=19,
        in_shape=shape,
        scales=[1, 1, 2, 1.5 if not dynamic else 3],
        ctm="half_pixel_symmetric",
    )
    fixed, res = fix(model)
    assert res.counts["symmetric_to_half_pixel"] == 1 and res.counts["scales_to_sizes"] == 0, res
    node = next(n for n in fixed.graph.node if n.op_type == "Resize")
    assert (
        helper.get_attribute_value(
            next(a for a in node.attribute if a.name == "coordinate_transformation_mode")
        )
        == b"half_pixel"
    )
    assert node.input[2] == "scales"
    assert_same_outputs(model, fixed, feeds_for((1, 2, 6, 8)), atol=1e-5)
    if dynamic:
        assert_same_outputs(model, fixed, feeds_for((1, 2, 9, 5)), atol=1e-5)
    assert not fix(fixed)[1].modified


@pytest.mark.trt
def test_half_pixel_symmetric_refused_by_rtx_until_fixed(rtx_parse_and_build):
    model = resize_model(
        opset=19, in_shape=[1, 2, 6, 8], scales=[1, 1, 2, 1.5], ctm="half_pixel_symmetric"
    )
    ok, errors = rtx_parse_and_build(model, build=False)
    assert not ok and "transformation mode" in " ".join(errors)
    ok, errors = rtx_parse_and_build(fix(model)[0])
    assert ok, errors


def test_unknown_interp_mode_is_refused():
    with pytest.raises(ValueError, match="interp_modes"):
        FixResizePass(interp_modes=frozenset({"bilinear"}))


# -- random Resize graphs ------------------------------------------------------------------------------
COORD_MODES = [
    "align_corners",
    "half_pixel",
    "pytorch_half_pixel",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "half_pixel_symmetric",
]


@st.composite
def resize_cases(draw):
    opset = draw(st.sampled_from([11, 13, 18, 19]))
    ctm = draw(st.sampled_from(COORD_MODES if opset >= 19 else COORD_MODES[:-1]))
    mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
    hw = [draw(st.integers(2, 9)) for _ in range(2)]
    dynamic = draw(st.booleans())
    scales = [1.0, 1.0] + [draw(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0])) for _ in range(2)]
    accepted = frozenset(draw(st.lists(st.sampled_from(COORD_MODES), max_size=3)))
    other_hw = [draw(st.integers(2, 11)) for _ in range(2)]
    return opset, ctm, mode, hw, dynamic, scales, accepted, other_hw


def predicted_rewrite(ctm, mode, hw, dynamic, scales, accepted) -> bool:
    """The exactness rule, restated independently: scale-free mode, or out/in == scale on every axis."""
    if ctm in accepted or ctm == "tf_half_pixel_for_nn":
        return False
    for dim, s in zip(hw, scales[2:], strict=True):
        if dynamic:
            if ctm != "align_corners" and not float(s).is_integer():
                return False
        else:
            out = int(np.floor(np.float32(dim) * np.float32(s)))
            if out < 1 or (ctm != "align_corners" and out / dim != s):
                return False
    return True


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=resize_cases())
def test_random_resize_graphs_keep_outputs(case, assert_same_outputs):
    opset, ctm, mode, hw, dynamic, scales, accepted, other_hw = case
    in_shape = [1, 2, "h", "w"] if dynamic else [1, 2, *hw]
    model = resize_model(opset=opset, in_shape=in_shape, scales=scales, mode=mode, ctm=ctm)
    fixed, res = fix(model, accepted_modes=accepted, interp_modes=ALL_INTERP)
    expected = predicted_rewrite(ctm, mode, hw, dynamic, scales, accepted)
    assert res.modified == expected, (res, case)
    if expected:
        assert refused_resizes(fixed, accepted, ALL_INTERP) == []
    else:
        assert fixed is model
    assert_same_outputs(model, fixed, feeds_for((1, 2, *hw)), atol=1e-5)
    if dynamic:
        assert_same_outputs(model, fixed, feeds_for((1, 2, *other_hw)), atol=1e-5)
    assert not fix(fixed, accepted_modes=accepted, interp_modes=ALL_INTERP)[1].modified


@pytest.mark.parametrize("dynamic", [False, True])
def test_resize_inside_if_branches(dynamic, assert_same_outputs):
    """Subgraphs are visited too; their new nodes read the outer-scope input."""

    def branch(name: str, scales) -> onnx.GraphProto:
        node = helper.make_node(
            "Resize",
            ["x", "", f"{name}_scales"],
            [f"{name}_y"],
            name=f"{name}_resize",
            mode="linear",
            coordinate_transformation_mode="align_corners",
        )
        return helper.make_graph(
            [node],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [None] * 4)],
            initializer=[numpy_helper.from_array(np.asarray(scales, np.float32), f"{name}_scales")],
        )

    x_shape = [1, 2, "h", "w"] if dynamic else [1, 2, 6, 8]
    node = helper.make_node(
        "If",
        ["cond"],
        ["y"],
        name="if",
        then_branch=branch("then", [1, 1, 2, 2]),
        else_branch=branch("else", [1, 1, 1.5, 3]),
    )
    graph = helper.make_graph(
        [node],
        "if_resize",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    fixed, res = fix(model)
    assert res.counts["scales_to_sizes"] == 2 and not res.skipped, res
    onnx.checker.check_model(fixed)
    for shape in [(1, 2, 6, 8), *([(1, 2, 5, 3)] if dynamic else [])]:
        for cond in (True, False):
            assert_same_outputs(
                model, fixed, {**feeds_for(shape), "cond": np.array(cond)}, atol=1e-5
            )
    assert not fix(fixed)[1].modified


@pytest.mark.parametrize("names", [("", "", "q"), ("r", "r", "q")], ids=["unnamed", "same-name"])
def test_new_names_are_unique_across_main_graph_and_branches(names, assert_same_outputs):
    """Resizes in the main graph and in a branch, unnamed or sharing a name: new tensors never clash.

    The dynamic H, W make the rewrite emit Shape/Mul/Floor/Cast nodes named after the Resize.
    """
    outer, then_name, else_name = names

    def branch(name: str, node_name: str, scales) -> onnx.GraphProto:
        node = helper.make_node(
            "Resize",
            ["x", "", f"{name}_scales"],
            [f"{name}_y"],
            name=node_name,
            mode="linear",
            coordinate_transformation_mode="align_corners",
        )
        return helper.make_graph(
            [node],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [None] * 4)],
            initializer=[numpy_helper.from_array(np.asarray(scales, np.float32), f"{name}_scales")],
        )

    nodes = [
        helper.make_node(
            "Resize",
            ["x", "", "scales"],
            ["y"],
            name=outer,
            mode="linear",
            coordinate_transformation_mode="align_corners",
        ),
        helper.make_node(
            "If",
            ["cond"],
            ["z"],
            name="if",
            then_branch=branch("then", then_name, [1, 1, 2, 2]),
            else_branch=branch("else", else_name, [1, 1, 1.5, 3]),
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "h", "w"]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [None] * 4),
        ],
        initializer=[numpy_helper.from_array(np.array([1, 1, 2, 1.5], np.float32), "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    fixed, res = fix(model)
    assert res.counts["scales_to_sizes"] == 3 and not res.skipped, res
    onnx.checker.check_model(fixed, full_check=True)
    for cond in (True, False):
        assert_same_outputs(
            model, fixed, {**feeds_for((1, 2, 4, 6)), "cond": np.array(cond)}, atol=1e-5
        )
    assert not fix(fixed)[1].modified


@pytest.mark.parametrize("ctm", ["align_corners", "asymmetric"])
def test_scale_to_an_empty_axis_is_left_as_scales(ctm):
    """floor(1 * 0.5) = 0: ONNX Runtime runs the scales form (an empty output) but refuses sizes 0."""
    ort = pytest.importorskip("onnxruntime")
    model = resize_model(opset=13, in_shape=[1, 2, 1, 3], scales=[1, 1, 0.5, 1], ctm=ctm)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(["y"], feeds_for((1, 2, 1, 3)))[0].shape == (1, 2, 0, 3)
    fixed, res = fix(
        model, accepted_modes=frozenset({"pytorch_half_pixel"}), interp_modes=ALL_INTERP
    )
    assert fixed is model and not res.modified
    assert [s.node for s in res.skipped] == ["resize"] and "empty output" in res.skipped[0].reason
