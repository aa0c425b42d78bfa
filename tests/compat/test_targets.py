"""The targets table: it loads, its facts hang together, and the tensorrt-rtx row matches the real parser."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from onnx import TensorProto, defs

from onnx2trt_lib.compat import lint_model
from onnx2trt_lib.compat.targets import (
    _ADDED_IN,
    _NEVER,
    _RTX_NEEDS_PLUGIN,
    ALL_COORDINATE_MODES,
    DEFAULT_TARGET,
    TARGETS,
    Target,
    _newer_than,
    get_target,
)
from onnx2trt_lib.errors import UsageError

REQUIRED = (
    "tensorrt-7.0",
    "tensorrt-7.1",
    "tensorrt-7.2",
    "tensorrt-8.0",
    "tensorrt-8.2",
    "tensorrt-8.5",
    "tensorrt-8.6",
    "tensorrt-10.0",
    "tensorrt-10",
    "tensorrt-11",
    "tensorrt-rtx",
)
ONNX_OPS = frozenset(
    s.name for s in defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")
)


def test_table_has_every_required_target():
    assert set(REQUIRED) <= set(TARGETS)
    assert DEFAULT_TARGET == "tensorrt-7.1" and DEFAULT_TARGET in TARGETS
    for name, target in TARGETS.items():
        assert isinstance(target, Target) and target.name == name
        assert target.description and target.sources, name


def test_rows_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TARGETS["tensorrt-7.1"].resize_cubic = True  # type: ignore[misc]


def test_op_names_are_real_onnx_ops():
    # A typo in the table would silently never match.
    assert set(_ADDED_IN) <= ONNX_OPS
    assert _NEVER <= ONNX_OPS
    for target in TARGETS.values():
        assert target.unsupported_ops <= ONNX_OPS, target.name
        modes = target.resize_linear_scale_modes
        assert modes is None or modes <= ALL_COORDINATE_MODES


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tensorrt-7.1", "tensorrt-7.1"),
        ("7.1", "tensorrt-7.1"),
        (" TensorRT-8.6 ", "tensorrt-8.6"),
        ("rtx", "tensorrt-rtx"),
        ("10.15", "tensorrt-10"),
    ],
)
def test_get_target_spellings(name, expected):
    assert get_target(name) is TARGETS[expected]


@pytest.mark.parametrize("name", ["tensorrt-6.0", "", "trt7", "tensorrt-7.1.3"])
def test_get_target_unknown_lists_known_names(name):
    with pytest.raises(UsageError) as info:
        get_target(name)
    message = str(info.value)
    assert "\n" not in message and "unknown target" in message
    assert all(t in message for t in REQUIRED)


def test_facts_from_the_issue():
    t = TARGETS
    assert t["tensorrt-7.0"].resize_linear_scale_modes == {"asymmetric"}
    for v in ("7.1", "7.2"):
        assert t[f"tensorrt-{v}"].resize_linear_scale_modes == {
            "half_pixel",
            "pytorch_half_pixel",
            "asymmetric",
        }
    for v in ("8.0", "8.2", "8.5", "8.6", "10.0", "10", "11", "rtx"):
        assert t[f"tensorrt-{v}"].resize_linear_scale_modes is None
    assert [n for n in REQUIRED if t[n].resize_cubic] == list(REQUIRED[5:])  # from 8.5
    assert [n for n in REQUIRED if t[n].gather_elements] == list(REQUIRED[2:])  # from 7.2
    for op in ("ScatterND", "GatherND"):
        assert [n for n in REQUIRED if op not in t[n].unsupported_ops] == list(
            REQUIRED[4:]
        )  # from 8.2
    assert {n for n, row in t.items() if row.scatter_nd_reduction_attr_refused} == {
        "tensorrt-10.0",
        "tensorrt-10.1",
    }
    for row in t.values():  # no parser has these (RTX 1.7 checked below)
        assert not (
            row.resize_antialias
            or row.resize_tf_crop_and_resize
            or row.resize_half_pixel_symmetric
            or row.resize_keep_aspect_ratio_policy
        )


def test_newer_releases_import_at_least_as_much():
    order = [
        "tensorrt-7.0",
        "tensorrt-7.1",
        "tensorrt-7.2",
        "tensorrt-8.0",
        "tensorrt-8.2",
        "tensorrt-8.5",
        "tensorrt-8.6",
        "tensorrt-10.0",
        "tensorrt-10.1",
        "tensorrt-10",
    ]
    for older, newer in itertools.pairwise(order):
        assert TARGETS[newer].unsupported_ops <= TARGETS[older].unsupported_ops, (older, newer)


def test_ops_newer_than_the_parser_are_unsupported():
    # LayerNormalization is opset 17: TensorRT 7.x (opset 11/13) cannot know it.
    assert "LayerNormalization" in TARGETS["tensorrt-7.1"].unsupported_ops
    assert "RMSNormalization" in TARGETS["tensorrt-10.0"].unsupported_ops  # opset 23 > 20
    assert "RMSNormalization" not in TARGETS["tensorrt-10"].unsupported_ops


# --- the tensorrt-rtx row against the real TensorRT-RTX OnnxParser ---------------------


def _rtx_parser():
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)

    def parse(model) -> tuple[bool, str]:
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        ok = parser.parse(model.SerializeToString())
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        return bool(ok), errors

    def supports(op: str) -> bool:
        parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
        return bool(parser.supports_operator(op))

    return parse, supports


@pytest.mark.trt
def test_rtx_unsupported_ops_match_the_parser():
    _, supports = _rtx_parser()
    refused_by_parser = {op for op in ONNX_OPS if not supports(op)}
    # The table adds the plugin-backed ops whose plugin the RTX wheel lacks (parsed below) and
    # the ops newer than its opset 24, which supports_operator() may still say yes to.
    newer = _newer_than(TARGETS["tensorrt-rtx"].max_opset)
    assert (
        TARGETS["tensorrt-rtx"].unsupported_ops & ONNX_OPS
        == refused_by_parser | _RTX_NEEDS_PLUGIN | newer
    )
    assert not _RTX_NEEDS_PLUGIN & refused_by_parser


def _rtx_cases(m):
    """(label, model): single-node models on both sides of each rule."""
    return [
        ("clean", m.clean()),
        ("linear half_pixel scales", m.resize()),
        ("linear align_corners scales", m.resize(coord="align_corners")),
        ("linear align_corners sizes", m.resize(coord="align_corners", scales="sizes")),
        ("cubic align_corners scales", m.resize("cubic", "align_corners")),
        ("nearest asymmetric scales", m.resize("nearest", "asymmetric", nearest_mode="floor")),
        ("antialias", m.resize(antialias=1)),
        ("antialias nearest", m.resize("nearest", "asymmetric", antialias=1)),
        ("tf_crop_and_resize", m.resize(coord="tf_crop_and_resize")),
        ("half_pixel_symmetric", m.resize(coord="half_pixel_symmetric")),
        (
            "keep_aspect_ratio not_larger",
            m.resize(scales="sizes", keep_aspect_ratio_policy="not_larger"),
        ),
        ("keep_aspect_ratio stretch", m.resize(scales="sizes", keep_aspect_ratio_policy="stretch")),
        ("scales graph input", m.resize(scales="input")),
        ("scales computed from constants", m.resize(scales="computed")),
        ("scales computed from the shape", m.resize(scales="shape")),
        ("scales Constant node", m.resize(scales="constant-node")),
        ("GatherElements", m.gather_elements()),
        ("ScatterND no reduction", m.scatter_nd(None, opset=13)),
        ("ScatterND reduction none", m.scatter_nd("none")),
        ("ScatterND reduction add", m.scatter_nd("add")),
        ("ScatterND reduction max", m.scatter_nd("max")),
        ("Unique", m.unary("Unique", opset=13)),
        ("NonZero", m.unary("NonZero", opset=13, out_type=TensorProto.INT64)),
        ("RoiAlign", m.roi_align()),
        ("ScatterElements reduction none", m.scatter_elements("none")),
        ("ScatterElements reduction add", m.scatter_elements("add")),
        ("ScatterElements no reduction", m.scatter_elements(None, opset=13)),
        ("Abs", m.unary("Abs", opset=13)),
        ("Relu", m.unary("Relu", opset=13)),
    ]


@pytest.mark.trt
def test_rtx_parser_agrees_with_table(models):
    """For each model: the lint says rtx refuses it  <=>  the real RTX parser refuses it."""
    parse, _ = _rtx_parser()
    disagreements = []
    for label, model in _rtx_cases(models):
        findings = lint_model(model, "tensorrt-rtx")
        ok, errors = parse(model)
        if ok == bool(findings):
            disagreements.append(
                f"{label}: parser ok={ok} ({errors[:120]}), lint={[f.rule for f in findings]}"
            )
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.trt
def test_rtx_parser_agrees_on_exported_fixtures():
    """The committed torch-exported fixtures: lint(rtx) is clean exactly when the RTX parser accepts."""
    from pathlib import Path

    import onnx

    paths = sorted((Path(__file__).parents[1] / "data" / "models").glob("*.onnx"))
    if not paths:
        pytest.skip("no exported fixtures under tests/data/models")
    parse, _ = _rtx_parser()
    disagreements = []
    for path in paths:
        model = onnx.load(str(path))
        findings = lint_model(model, "tensorrt-rtx")
        ok, errors = parse(model)
        if ok == bool(findings):
            disagreements.append(
                f"{path.name}: parser ok={ok} ({errors[:120]}), lint={[f.rule for f in findings]}"
            )
    assert not disagreements, "\n".join(disagreements)
