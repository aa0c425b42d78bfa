"""Each lint rule fires on a small model the target refuses, and not on one it accepts."""

from __future__ import annotations

import onnx_graphsurgeon as gs
import pytest

from onnx2trt_lib.compat import (
    PASS_ORDER,
    RULE_NAMES,
    TARGETS,
    Finding,
    lint_graph,
    lint_model,
    pass_names_for_target,
    passes_for_target,
)
from onnx2trt_lib.errors import UsageError
from onnx2trt_lib.passes import registered_passes

NEW = (
    "tensorrt-8.0",
    "tensorrt-8.2",
    "tensorrt-8.5",
    "tensorrt-8.6",
    "tensorrt-10.0",
    "tensorrt-10",
    "tensorrt-11",
    "tensorrt-rtx",
)


def rules(model, target) -> list[tuple[str, str | None]]:
    return [(f.rule, f.fix_pass) for f in lint_model(model, target)]


@pytest.mark.parametrize("target", list(TARGETS))
def test_clean_model_has_no_findings(models, target):
    assert lint_model(models.clean(), target) == []


def test_finding_fields_and_dict(models):
    (finding,) = lint_model(models.resize(coord="align_corners"), "tensorrt-7.1")
    assert finding == Finding(
        "resize", "Resize", "resize-scales-coordinate-mode", finding.message, "fix-resize"
    )
    assert "align_corners" in finding.message and "tensorrt-7.1" in finding.message
    assert finding.to_dict() == {
        "node": "resize",
        "op": "Resize",
        "rule": "resize-scales-coordinate-mode",
        "message": finding.message,
        "fix_pass": "fix-resize",
    }
    assert set(RULE_NAMES) >= {finding.rule}


def test_lint_does_not_modify_the_model(models):
    model = models.resize(coord="align_corners", scales="computed")
    before = model.SerializeToString()
    lint_model(model, "tensorrt-7.1")
    assert model.SerializeToString() == before


def test_unknown_target_is_usage_error(models):
    with pytest.raises(UsageError, match="tensorrt-7.1"):
        lint_model(models.clean(), "tensorrt-6.5")


# --- Resize with scales and a coordinate mode the old parsers refuse ------------------


@pytest.mark.parametrize("target", ("tensorrt-7.1", "tensorrt-7.2"))
def test_align_corners_linear_with_scales_flagged_for_7_1_and_7_2(models, target):
    assert rules(models.resize(coord="align_corners"), target) == [
        ("resize-scales-coordinate-mode", "fix-resize")
    ]


@pytest.mark.parametrize("scales", ["initializer", "sizes"])
@pytest.mark.parametrize("coord", ["align_corners", "half_pixel", "pytorch_half_pixel"])
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_7_0_accepts_only_asymmetric_even_with_sizes(models, scales, coord, mode):
    # No automatic fix: sizes do not help, 7.0 asserts asymmetric for every Resize.
    assert rules(models.resize(mode, coord, scales=scales), "tensorrt-7.0") == [
        ("resize-coordinate-mode", None)
    ]
    assert rules(models.resize(mode, "asymmetric", scales=scales), "tensorrt-7.0") == []


@pytest.mark.parametrize("target", NEW)
def test_align_corners_linear_with_scales_accepted_from_8_0(models, target):
    assert rules(models.resize(coord="align_corners"), target) == []


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "tensorrt-7.0"])
def test_align_corners_with_sizes_accepted_from_7_1(models, target):
    assert rules(models.resize(coord="align_corners", scales="sizes"), target) == []


@pytest.mark.parametrize("coord", ["half_pixel", "pytorch_half_pixel"])
def test_half_pixel_with_scales_only_7_0_refuses(models, coord):
    model = models.resize(coord=coord)
    assert rules(model, "tensorrt-7.0") == [("resize-coordinate-mode", None)]
    assert rules(model, "tensorrt-7.1") == []
    assert rules(model, "tensorrt-7.2") == []


def test_asymmetric_accepted_by_every_target(models):
    for target in TARGETS:
        assert rules(models.resize(coord="asymmetric"), target) == []


def test_nearest_with_scales_is_not_the_linear_rule(models):
    assert rules(models.resize("nearest", "align_corners"), "tensorrt-7.1") == []


def test_opset10_resize_is_asymmetric(models):
    # Resize-10 has no coordinate_transformation_mode; it behaves as asymmetric.
    assert rules(models.resize(coord=None, opset=10), "tensorrt-7.0") == []


def test_default_coordinate_mode_is_half_pixel(models):
    assert rules(models.resize(coord=None), "tensorrt-7.0") == [("resize-coordinate-mode", None)]


# --- cubic ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ("tensorrt-7.1", "tensorrt-7.2", "tensorrt-8.0", "tensorrt-8.2"))
def test_cubic_refused_before_8_5_without_fix(models, target):
    # Not fixable: fix-resize would only move align_corners to sizes, cubic stays refused.
    assert rules(models.resize("cubic", "align_corners"), target) == [
        ("resize-cubic-unsupported", None)
    ]
    with_sizes = models.resize("cubic", "align_corners", scales="sizes")
    assert rules(with_sizes, target) == [("resize-cubic-unsupported", None)]


@pytest.mark.parametrize("target", ("tensorrt-8.5", "tensorrt-8.6", "tensorrt-10", "tensorrt-rtx"))
def test_cubic_accepted_from_8_5(models, target):
    assert rules(models.resize("cubic", "align_corners"), target) == []


# --- opset 18/19 Resize features no parser has ---------------------------------------


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"antialias": 1, "coord": "asymmetric"}, "resize-antialias"),
        ({"coord": "tf_crop_and_resize"}, "resize-tf-crop-and-resize"),
        ({"coord": "half_pixel_symmetric"}, "resize-half-pixel-symmetric"),
        (
            {"scales": "sizes", "coord": "asymmetric", "keep_aspect_ratio_policy": "not_larger"},
            "resize-keep-aspect-ratio-policy",
        ),
    ],
)
def test_unfixable_resize_features(models, target, kwargs, rule):
    assert rules(models.resize(**kwargs), target) == [(rule, None)]


def test_antialias_zero_and_stretch_are_fine(models):
    model = models.resize(scales="sizes", antialias=0, keep_aspect_ratio_policy="stretch")
    assert rules(model, "tensorrt-rtx") == []


# --- where Resize scales come from -----------------------------------------------------


@pytest.mark.parametrize("kind", ["initializer", "constant-node"])
def test_constant_scales_accepted(models, kind):
    for target in TARGETS:
        assert rules(models.resize(coord="asymmetric", scales=kind), target) == []


@pytest.mark.parametrize("kind", ["computed", "shape"])
def test_foldable_scales_need_fold_constants_on_old_parsers(models, kind):
    model = models.resize(scales=kind)
    assert rules(model, "tensorrt-7.1") == [("resize-scales-not-constant", "fold-constants")]
    assert rules(model, "tensorrt-rtx") == []


def test_scales_from_a_graph_input_refused_everywhere_without_fix(models):
    for target in TARGETS:
        model = models.resize(coord="asymmetric", scales="input")
        assert rules(model, target) == [("resize-scales-not-constant", None)]


def test_scales_from_a_dynamic_shape_not_foldable(models):
    model = models.resize(scales="shape")
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "h"
    assert rules(model, "tensorrt-7.1") == [("resize-scales-not-constant", None)]
    assert rules(model, "tensorrt-10") == []  # computed from the shape only: newer parsers take it


def test_upsample_computed_scales(models):
    assert rules(models.upsample("computed"), "tensorrt-7.1") == [
        ("resize-scales-not-constant", "fold-constants")
    ]
    assert rules(models.upsample("initializer"), "tensorrt-7.1") == []


def test_fold_constants_clears_the_scales_finding(models):
    """The pass the finding names really removes it (fold-constants exists today)."""
    graph = gs.import_onnx(models.resize(scales="computed"))
    assert [f.fix_pass for f in lint_graph(graph, "tensorrt-7.1")] == ["fold-constants"]
    for p in passes_for_target("tensorrt-7.1", lint_graph(graph, "tensorrt-7.1")):
        p.run(graph)
        graph.cleanup().toposort()
    assert lint_graph(graph, "tensorrt-7.1") == []


# --- GatherElements ------------------------------------------------------------------


@pytest.mark.parametrize("target", ("tensorrt-7.0", "tensorrt-7.1"))
def test_gather_elements_flagged_before_7_2(models, target):
    assert rules(models.gather_elements(), target) == [
        ("gather-elements-unsupported", "decompose-gather-elements")
    ]


@pytest.mark.parametrize("target", ("tensorrt-7.2", "tensorrt-8.6", "tensorrt-10", "tensorrt-rtx"))
def test_gather_elements_native_from_7_2(models, target):
    assert rules(models.gather_elements(), target) == []


# --- ScatterND -----------------------------------------------------------------------


@pytest.mark.parametrize("target", list(TARGETS))
def test_scatter_nd_reduction_none(models, target):
    found = rules(models.scatter_nd("none"), target)
    if target in ("tensorrt-10.0", "tensorrt-10.1"):
        assert found == [("scatter-reduction-attr", "strip-scatter-reduction")]
    elif target in ("tensorrt-7.0", "tensorrt-7.1", "tensorrt-7.2", "tensorrt-8.0"):
        assert found == [("unsupported-op", None)]  # no ScatterND importer before 8.2
    else:
        assert found == []


@pytest.mark.parametrize("target", ("tensorrt-8.2", "tensorrt-10.0", "tensorrt-10", "tensorrt-rtx"))
def test_scatter_nd_without_attr_accepted_from_8_2(models, target):
    assert rules(models.scatter_nd(None, opset=13), target) == []


@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
def test_scatter_nd_real_reduction_has_no_fix(models, reduction):
    for target in ("tensorrt-8.5", "tensorrt-10.0", "tensorrt-10", "tensorrt-rtx"):
        assert rules(models.scatter_nd(reduction), target) == [("scatter-reduction-attr", None)]


# --- ops a parser does not import ------------------------------------------------------


def test_unsupported_op_by_version(models):
    nonzero = models.unary("NonZero", opset=13)
    assert rules(nonzero, "tensorrt-8.2") == [("unsupported-op", None)]
    assert rules(nonzero, "tensorrt-8.5") == []
    unique = models.unary("Unique", opset=13)
    for target in TARGETS:  # no TensorRT version imports Unique
        assert rules(unique, target) == [("unsupported-op", None)]
    layer_norm = models.unary("LayerNormalization", opset=17)
    assert rules(layer_norm, "tensorrt-8.5") == [("unsupported-op", None)]
    assert rules(layer_norm, "tensorrt-8.6") == []


def test_custom_domain_ops_are_judged_by_name_as_the_parser_does(models):
    # the parser ignores the domain: a name it imports is imported, any other needs a plugin
    model = models.unary("Unique", opset=13)
    model.graph.node[0].domain = "com.example"
    model.opset_import.add(domain="com.example", version=1)
    assert rules(model, "tensorrt-7.1") == [("plugin-required", None)]
    model.graph.node[0].op_type = "Relu"
    assert rules(model, "tensorrt-7.1") == []
    model.graph.node[0].op_type = "FusedConv"  # an ONNX Runtime contrib op
    findings = lint_model(model, "tensorrt-10")
    assert [f.rule for f in findings] == [
        "plugin-required"
    ] and "com.example::FusedConv" in findings[0].message


def test_nodes_inside_subgraphs_are_linted(models):
    from onnx import TensorProto, helper

    inner = models.gather_elements().graph
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    branch = helper.make_graph(list(inner.node), "then", [], [out], list(inner.initializer))
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])
    node = helper.make_node("If", ["c"], ["out"], name="if", then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node], "g", [cond, x], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert (
        rules(model, "tensorrt-7.1")
        == [("gather-elements-unsupported", "decompose-gather-elements")] * 2
    )


# --- the fixing pipeline -----------------------------------------------------------------


def names(target, findings=None):
    return [n for n, _ in pass_names_for_target(target, findings)]


def test_full_pipeline_per_target():
    assert names("tensorrt-7.1") == [
        "fold-constants",
        "fix-resize",
        "decompose-gather-elements",
        "cleanup",
    ]
    assert names("tensorrt-7.2") == ["fold-constants", "fix-resize", "cleanup"]
    assert names("tensorrt-10.0") == ["fold-constants", "strip-scatter-reduction", "cleanup"]
    assert names("tensorrt-rtx") == ["fold-constants", "cleanup"]
    for target in TARGETS:
        got = names(target)
        assert got == [n for n in PASS_ORDER if n in got]  # canonical order, folding first


def test_fix_resize_gets_the_target_modes():
    opts = dict(pass_names_for_target("tensorrt-7.1"))
    assert opts["fix-resize"] == {
        "accepted_modes": frozenset({"half_pixel", "pytorch_half_pixel", "asymmetric"})
    }
    # 7.0 refuses every non-asymmetric Resize, sizes or not: moving scales to sizes cannot help.
    assert "fix-resize" not in dict(pass_names_for_target("tensorrt-7.0"))


def test_pipeline_from_findings(models):
    assert pass_names_for_target("tensorrt-7.1", []) == []
    unfixable = lint_model(models.resize(antialias=1), "tensorrt-7.1")
    assert unfixable and pass_names_for_target("tensorrt-7.1", unfixable) == []
    findings = lint_model(models.resize(coord="align_corners"), "tensorrt-7.1") + lint_model(
        models.gather_elements(), "tensorrt-7.1"
    )
    assert names("tensorrt-7.1", findings) == [
        "fold-constants",
        "fix-resize",
        "decompose-gather-elements",
        "cleanup",
    ]


def test_passes_are_instantiated_through_the_registry():
    wanted = names("tensorrt-7.1")
    missing = sorted(set(wanted) - set(registered_passes()))
    if missing:
        pytest.skip(f"passes not registered yet: {', '.join(missing)}")
    passes = passes_for_target("tensorrt-7.1")
    assert [p.name for p in passes] == wanted
    assert passes[1].accepted_modes == TARGETS["tensorrt-7.1"].resize_linear_scale_modes


# --- ScatterElements reductions ----------------------------------------------------------


def test_scatter_elements_reduction(models):
    add = models.scatter_elements("add")
    assert rules(add, "tensorrt-8.6") == [("scatter-reduction-attr", None)]
    assert rules(add, "tensorrt-10.0") == []  # TensorRT 10.0 added ScatterElements reductions
    assert rules(add, "tensorrt-rtx") == [("scatter-reduction-attr", None)]  # RTX 1.7 refuses them
    for target in TARGETS:  # reduction="none" is only a problem for ScatterND on 10.0/10.1
        found = rules(models.scatter_elements("none"), target)
        assert found == (
            [("unsupported-op", None)]
            if "ScatterElements" in TARGETS[target].unsupported_ops
            else []
        )


def test_scatter_reduction_on_a_parser_without_the_op_is_reported_once(models):
    assert rules(models.scatter_elements("add"), "tensorrt-7.1") == [("unsupported-op", None)]


def test_plugin_backed_ops_differ_between_rtx_and_tensorrt(models):
    # TensorRT-RTX lacks the NonZero/RoiAlign plugins that TensorRT itself ships.
    for model in (models.unary("NonZero", opset=13), models.roi_align()):
        assert rules(model, "tensorrt-rtx") == [("unsupported-op", None)]
        assert rules(model, "tensorrt-11") == []
        assert rules(model, "tensorrt-8.2") == [("unsupported-op", None)]


def test_empty_constant_node_inputs_mean_absent(models):
    """Legacy opset-11 exports feed roi/scales as an empty Constant when sizes are used."""
    import numpy as np
    from onnx import helper, numpy_helper

    model = models.resize(coord="align_corners", scales="sizes", opset=11)
    empty = helper.make_node(
        "Constant", [], ["empty"], value=numpy_helper.from_array(np.zeros(0, np.float32))
    )
    model.graph.node.insert(0, empty)
    model.graph.node[-1].input[1] = model.graph.node[-1].input[2] = "empty"
    assert rules(model, "tensorrt-7.1") == []


def _pipeline_by_class(target):
    """The fixing pipeline built from the pass modules directly (works before registration)."""
    classes = {}
    for module, cls in [
        ("fold_constants", "FoldConstantsPass"),
        ("fix_resize", "FixResizePass"),
        ("decompose_gather_elements", "DecomposeGatherElementsPass"),
        ("strip_scatter_reduction", "StripScatterReductionPass"),
        ("cleanup", "CleanupPass"),
    ]:
        mod = pytest.importorskip(f"onnx2trt_lib.passes.{module}")
        c = getattr(mod, cls)
        classes[c.name] = c
    return [classes[name](**opts) for name, opts in pass_names_for_target(target)]


@pytest.mark.parametrize("target", ["tensorrt-7.0", "tensorrt-7.1", "tensorrt-10.0"])
def test_fix_pipeline_clears_every_fixable_finding(models, target):
    """Each fix_pass named by a finding really removes it: after the pipeline, nothing fixable is left."""
    from pathlib import Path

    import onnx

    from onnx2trt_lib.passes import PassManager

    cases = [
        models.resize(coord="align_corners"),
        models.resize("cubic", "align_corners"),
        models.resize(coord="align_corners", scales="computed"),
        models.resize(scales="shape"),
        models.gather_elements(),
        models.scatter_nd("none"),
        models.upsample("computed"),
    ]
    cases += [
        onnx.load(str(p))
        for p in sorted((Path(__file__).parents[1] / "data" / "models").glob("*.onnx"))
    ]
    fixable_before = 0
    for model in cases:
        fixable_before += sum(1 for f in lint_model(model, target) if f.fix_pass)
        fixed, _ = PassManager(_pipeline_by_class(target)).run(model)
        left = [(f.node, f.rule) for f in lint_model(fixed, target) if f.fix_pass]
        assert left == [], left
    assert fixable_before > 0


def test_uint8_rules_follow_the_documented_versions():
    # DataType.UINT8 (documented from TensorRT 8.6): network inputs/outputs only, converted by Identity/Cast
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    nodes = [
        helper.make_node("Add", ["i", "c"], ["s"], name="add"),
        helper.make_node("Cast", ["s"], ["y"], name="cast", to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("i", TensorProto.UINT8, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((1, 4), np.uint8), "c")],
    )
    model = shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    )
    for target in ("tensorrt-8.6", "tensorrt-10", "tensorrt-11", "tensorrt-rtx"):
        findings = lint_model(model, target)
        assert [(f.node, f.rule) for f in findings] == [
            ("add", "uint8-tensor"),
            ("cast", "uint8-tensor"),
        ], target
        assert "'i'" in findings[0].message and "'s'" in findings[1].message
    assert lint_model(model, "tensorrt-8.5") == []  # not judged before the documented versions


# --- the model's opset: attribute vs input forms, notes on newer opsets -----------------


def _unsqueeze(opset: int, axes_as: str = "initializer"):
    """Unsqueeze of a 2x3 input at axis 0: `axes` an attribute (< 13) or an input (>= 13)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = []
    if opset < 13:
        node = helper.make_node("Unsqueeze", ["x"], ["y"], name="u", axes=[0])
    else:
        node = helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="u")
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
    graph = helper.make_graph([node], "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("target", ["tensorrt-7.0", "tensorrt-7.1"])
def test_input_forms_newer_than_the_parser_are_noted(target):
    # The YOLOv8n/dynamo case: Unsqueeze-13 gives axes as an input; the 7.1 parser (opsets <= 11)
    # looks for the attribute ("Attribute not found: axes"). Reported as a note (NOTE_RULES).
    from onnx2trt_lib.compat import lint_notes

    opset_note, node_note = lint_notes(_unsqueeze(17), target)
    assert "opset 17" in opset_note and "up to 11" in opset_note
    assert "[input-form-too-new]" in node_note and "opset-17" in node_note
    assert lint_notes(_unsqueeze(11), target) == []
    assert lint_model(_unsqueeze(17), target) == []


@pytest.mark.parametrize("target", ["tensorrt-7.2", "tensorrt-8.2", "tensorrt-10", "tensorrt-rtx"])
def test_input_forms_read_by_newer_parsers(target):
    from onnx2trt_lib.compat import lint_notes

    assert lint_model(_unsqueeze(17), target) == []
    assert not any("input-form-too-new" in n for n in lint_notes(_unsqueeze(17), target))


def test_lint_notes_say_when_the_opset_is_beyond_the_parser():
    from onnx2trt_lib.compat import lint_notes

    (note,) = lint_notes(_unsqueeze(11), "tensorrt-7.0") or ["none"]
    assert note == "none"
    assert lint_notes(_unsqueeze(13), "tensorrt-7.2") == []  # 7.2 reads opset 13
    assert lint_notes(_unsqueeze(17), "tensorrt-rtx") == []


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tensorrt-7.1", []),  # the 7.x parsers ignore pooling dilations
        ("tensorrt-8.0", ["pool-dilations"]),
        ("tensorrt-10", ["pool-dilations"]),
    ],
)
def test_pool_dilations_by_version(target, expected):
    from onnx import TensorProto, helper

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 11)]
    )
    assert [f.rule for f in lint_model(model, target)] == expected


def test_quantized_types_need_tensorrt_10():
    from onnx import TensorProto, helper

    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E4M3FN)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [4])
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 19)]
    )
    assert [f.rule for f in lint_model(model, "tensorrt-8.6")] == ["tensor-type-unsupported"]
    assert [f.rule for f in lint_model(model, "tensorrt-10")] == ["quantized-type-outside-qdq"]


def test_constant_inputs_computed_from_constants_fold_on_old_parsers():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Add", ["a", "b"], ["axes"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="r"),
    ]
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("a", 0), ("b", 1))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)]
    )
    assert rules(model, "tensorrt-8.6") == [("input-not-constant", "fold-constants")]
    assert rules(model, "tensorrt-10") == []  # the 10.x parser folds constant subgraphs itself
