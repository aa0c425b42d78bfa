"""What each TensorRT ONNX parser refuses: one row of data per target.

The lint rules (rules.py) read only this table, so adding a target or correcting a fact is
a data change. Every fact has a source; docs/targets.md has the table with the links.

Sources (repository, branch, path):
- onnx/onnx-tensorrt, branches release/7.0 ... release/10.x, `docs/operators.md`: which ONNX
  ops each parser imports at all ("N" rows) and the highest opset it documents.
- onnx/onnx-tensorrt, same branches, `builtin_op_importers.cpp` (<= 8.x) and
  `onnxOpImporters.cpp` (>= 9.x), `DEFINE_BUILTIN_OP_IMPORTER(Resize)`,
  `(GatherElements)`, `(ScatterND)`: the attribute checks that make an op fail to import
  (e.g. the 7.1 assertion "TensorRT only supports half pixel, pytorch half_pixel, and
  asymmetric tranformation mode for linear resizes when scales are provided!").
- TensorRT-RTX 1.7 (the `tensorrt_rtx` wheel's OnnxParser), checked on this machine by
  tests/compat/test_targets.py::test_rtx_parser_agrees_with_table.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import UsageError

# Coordinate-transformation modes of ONNX Resize (opset 11+; half_pixel_symmetric is opset 19).
ALL_COORDINATE_MODES: frozenset[str] = frozenset(
    {
        "half_pixel",
        "half_pixel_symmetric",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_half_pixel_for_nn",
        "tf_crop_and_resize",
    }
)


@dataclass(frozen=True)
class Target:
    """One ONNX parser version and what it refuses to import.

    Booleans say whether the parser ACCEPTS the feature; frozensets of modes list what it
    accepts (None = no restriction).
    """

    name: str
    description: str
    # ONNX ops (default domain) the parser has no importer for at all.
    unsupported_ops: frozenset[str]
    # Coordinate modes accepted for linear/cubic Resize given `scales` (None = any).
    resize_linear_scale_modes: frozenset[str] | None
    # mode="cubic" imported at all.
    resize_cubic: bool
    # Highest opset the parser documents (newer models may still parse, op by op).
    max_opset: int
    # GatherElements imported natively (else decompose-gather-elements is the fix).
    gather_elements: bool = True
    # ScatterND with a `reduction` attribute refused, even reduction="none" (10.0/10.1).
    scatter_nd_reduction_attr_refused: bool = False
    # ScatterND reductions other than "none" that import (opset 16/18 add, mul, max, min).
    scatter_nd_reductions: frozenset[str] = frozenset()
    # Same for ScatterElements (TensorRT 10.0 added them; TensorRT-RTX 1.7 refuses them).
    scatter_elements_reductions: frozenset[str] = frozenset()
    # Coordinate modes accepted for any Resize, scales or sizes (None = any but the two below).
    resize_coordinate_modes: frozenset[str] | None = None
    # Resize features of opset 18/19; False = the parser refuses the node.
    resize_antialias: bool = False
    resize_tf_crop_and_resize: bool = False
    resize_half_pixel_symmetric: bool = False
    resize_keep_aspect_ratio_policy: bool = False  # any policy other than "stretch"
    # Resize `scales` must be a constant (initializer / Constant node), not a computed tensor.
    resize_scales_must_be_constant: bool = True
    # tf_half_pixel_for_nn Resize refused unless nearest_mode is round_prefer_floor and the
    # output size comes from (non-empty) scales, not sizes (TensorRT-RTX 1.7 importResize).
    resize_tf_half_pixel_for_nn_strict: bool = False
    # With constant scales, linear/cubic Resize may scale only the innermost N axes
    # ("only supports cubic resizing on the outermost 2 dimensions"); None = no limit.
    resize_linear_max_scaled_axes: int | None = None
    resize_cubic_max_scaled_axes: int | None = None
    # uint8 tensors only at the network's inputs (read by Cast/Identity) and outputs; never in
    # between, so no uint8 Q/DQ ("Cannot be used to represent quantized floating-point values",
    # DataType.UINT8 docs from 8.6 on; the RTX parser: "does not support UINT8 types for
    # intermediate tensors"). Older parsers are not judged.
    uint8_io_only: bool = False
    # MaxPool with its second (Indices) output refused, used or not ("doesn't support mode than 1
    # outputs for MaxPool nodes", TensorRT-RTX 1.7 parser).
    maxpool_indices: bool = True
    # ScatterElements refused when a static dimension of indices/updates exceeds data's, the scatter
    # axis included (onnx-tensorrt@main importScatterElements: "Indices dimensions must be less than
    # data dimensions!"), though ONNX allows it on the axis (many updates into few slots).
    scatter_elements_indices_within_data: bool = False
    # ONNX element types (TensorProto enums) the parser converts to a TensorRT DataType; any other
    # tensor type is refused ("Failed to convert ONNX date type to TensorRT data type.").
    tensor_types: frozenset[int] = frozenset()
    # Of those, the quantized types TensorRT accepts only as the data of Q/DQ (and weights): FP8,
    # INT4, FP4 ("Tensor input has datatype FP8 but is not consumed by IPluginLayer ...").
    quantized_types: frozenset[int] = frozenset()
    # Inputs that must be build-time constants (Reduce*/Squeeze/Unsqueeze axes, Dropout
    # training_mode, ...): "initializer" = an initializer or Constant output (fold-constants
    # helps when computed from constants); "foldable" = also a subgraph of constants, which the
    # parser folds itself (TensorRT 10 and later; not through Shape/Size).
    constant_inputs: str = "initializer"
    # Pooling with dilations other than 1 refused (from 8.0: "This version of TensorRT does not
    # support dilations other than 1."; 7.x ignores the attribute).
    pool_dilations_refused: bool = True
    # LayerNormalization with its Mean/InvStdDev outputs refused ("Only the first output `Y` is
    # supported", docs/operators.md from 10.1).
    layernorm_one_output: bool = False
    # Ops that may read a uint8 graph input directly (besides Cast and Identity).
    uint8_input_readers: tuple[str, ...] = ("Cast", "Identity")  # (a tuple: a stable repr)
    # Clip and integer Mod on int8 tensors refused (TensorRT-RTX 1.7: Clip takes float, half,
    # bf16, int32, int64; Mod with fmod=0 int32/int64).
    int8_clip_mod_refused: bool = False
    # TensorRT-RTX 1.7 limits on Attention, Range and TensorScatter (parser and builder, found by
    # tools/conformance.py on the ONNX node tests).
    rtx_node_limits: bool = False
    # NonMaxSuppression parses but the builder fails (TensorRT-RTX 1.7: no NMS kernel).
    nms_builder_refused: bool = False
    # Where the facts come from (repo@branch:path), for docs and error messages.
    sources: tuple[str, ...] = ()

    def accepts_scale_mode(self, mode: str) -> bool:
        modes = self.resize_linear_scale_modes
        return modes is None or mode in modes

    def accepts_coordinate_mode(self, mode: str) -> bool:
        modes = self.resize_coordinate_modes
        return modes is None or mode in modes

    @property
    def sizes_fix_helps(self) -> bool:
        """True when moving scales to sizes (fix-resize) reaches a mode the parser accepts."""
        if self.resize_linear_scale_modes is None:
            return False
        modes = self.resize_coordinate_modes
        return modes is None or bool(modes - self.resize_linear_scale_modes)


# --- the data -----------------------------------------------------------------------
# Ops no TensorRT ONNX parser imports: "N" rows of onnx/onnx-tensorrt@main (TensorRT 10.15)
# docs/operators.md. Older parsers lack these too.
_NEVER: frozenset[str] = frozenset(
    """
    AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor CenterCropPad Col2Im
    Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger
    MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
    OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt
    SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap
    SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer StringSplit
    TfIdfVectorizer Unique
    """.split()
)

# The release whose parser first imports an op (every earlier one refuses it), from
# onnx/onnx-tensorrt docs/Changelog.md ("Added support for ..." entries; 21.02/21.03 are the
# container releases of the TensorRT 7.2.2/7.2.3 parser) and, for 7.x/8.4, the "N" rows of
# docs/operators.md on release/7.x and release/8.4.
_ADDED_IN: dict[str, str] = {
    # 21.02 / 21.03 container releases (TensorRT 7.2.x)
    **dict.fromkeys(
        "ReverseSequence Celu CumSum LessOrEqual GreaterOrEqual LpNormalization LpPool EyeLike "
        "GatherElements".split(),
        "7.2",
    ),
    "NonMaxSuppression": "8.0",  # experimental in 8.0, native in 8.5
    **dict.fromkeys(
        "Einsum IsNaN GatherND Scatter ScatterElements ScatterND Sign Round".split(), "8.2"
    ),
    **dict.fromkeys("Shrink Xor".split(), "8.4"),
    **dict.fromkeys(
        "RandomNormal RandomNormalLike MeanVarianceNormalization RoiAlign Mod Trilu GridSample NonZero "
        "OneHot".split(),
        "8.5",
    ),
    **dict.fromkeys("GroupNormalization LayerNormalization IsInf".split(), "8.6"),
    "Hardmax": "10.0",  # 9.2 in the changelog; 9.x was never a general release
    "DeformConv": "10.1",
    **dict.fromkeys("BlackmanWindow HammingWindow HannWindow".split(), "10.4"),
    "STFT": "10.5",
}

# What TensorRT-RTX 1.7's OnnxParser.supports_operator() says no to (checked by
# tests/compat/test_targets.py against the installed wheel): _NEVER plus newer ops and DeformConv.
_RTX_PARSER_UNSUPPORTED: frozenset[str] = _NEVER | frozenset(
    {"BitCast", "CumProd", "DeformConv", "SwiGLU"}
)
# Ops the parser maps to a TensorRT plugin that the TensorRT-RTX wheel does not ship:
# supports_operator() says yes, parsing fails ("NonZero plugin creator version 1 was not
# found in plugin registry"). Found by the cross-check test; TensorRT proper has these plugins.
_RTX_NEEDS_PLUGIN: frozenset[str] = frozenset({"NonZero", "RoiAlign"})
_RTX_UNSUPPORTED: frozenset[str] = _RTX_PARSER_UNSUPPORTED | _RTX_NEEDS_PLUGIN
_RTX_MAX_OPSET = 24


def _newer_than(max_opset: int) -> frozenset[str]:
    """Default-domain ops first defined after `max_opset`: a parser of that opset has no importer
    (TensorRT-RTX 1.7's supports_operator() says yes to LinearAttention and CausalConvWithState,
    opset 27, and parsing fails: "failed to load CausalConvWithState plugin")."""
    return frozenset(op for op, opset in onnx_op_first_opsets().items() if opset > max_opset)


# ONNX element types (TensorProto enums) per TensorRT release. The parser converts these to a
# DataType (onnx-tensorrt `convertDtype`, docs/operators.md "TensorRT supports the following ONNX
# data types"): DOUBLE is cast down, INT64 too before 10.0. BF16 from 9.0, FP8 and INT4 from
# 10.0 (10.0-GA operators.md), FP4 from 10.8 (DataType.FP4). Never: int16, uint16, uint32,
# uint64, string, complex, the FNUZ/E5M2 FP8 variants, FLOAT8E8M0, UINT4, (U)INT2, FLOAT6.
_FLOAT, _UINT8, _INT8, _INT32, _INT64, _BOOL, _FLOAT16, _DOUBLE = 1, 2, 3, 6, 7, 9, 10, 11
_BFLOAT16, _FLOAT8E4M3FN, _INT4, _FLOAT4E2M1 = 16, 17, 22, 23
_BASE_TYPES = frozenset({_FLOAT, _UINT8, _INT8, _INT32, _INT64, _BOOL, _FLOAT16, _DOUBLE})
QUANTIZED_TYPES = frozenset({_FLOAT8E4M3FN, _INT4, _FLOAT4E2M1})


def _tensor_types(key: tuple[int, ...]) -> frozenset[int]:
    types = set(_BASE_TYPES)
    if key >= (9, 0):
        types.add(_BFLOAT16)
    if key >= (10, 0):
        types |= {_FLOAT8E4M3FN, _INT4}
    if key >= (10, 8):
        types.add(_FLOAT4E2M1)
    return frozenset(types)


# The opset at which an op's input takes over from an attribute (or an op's signature changes
# so an importer written for older opsets misreads it): a parser that reads only opsets below
# `since` looks for the attribute ("Attribute not found: axes", TensorRT 7.1.3 on Unsqueeze-13)
# or silently ignores the input. ONNX Changelog.md: Squeeze/Unsqueeze/ReduceSum/Split-13,
# the other Reduce* ops 18, Pad-11 (pads), Clip-11 (min/max), TopK-10 (K), Slice-10, Dropout-12
# (ratio, training_mode), Upsample-9 (scales), Resize-11 (roi, scales, sizes).
INPUT_FORM_SINCE: dict[str, tuple[int, int, str]] = {
    **dict.fromkeys(("Squeeze", "Unsqueeze", "ReduceSum"), (13, 1, "axes")),
    "Split": (13, 1, "split"),
    **{
        op: (18, 1, "axes")
        for op in (
            "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
            "ReduceProd ReduceSumSquare"
        ).split()
    },
    "Pad": (11, 1, "pads"),
    "Clip": (11, 1, "min"),
    "TopK": (10, 1, "K"),
    "Slice": (10, 1, "starts"),
    "Dropout": (12, 1, "ratio"),
}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@functools.cache
def onnx_op_first_opsets() -> dict[str, int]:
    """Default-domain ONNX op -> the opset that introduced it (from the installed onnx)."""
    from onnx import defs

    first: dict[str, int] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain in ("", "ai.onnx"):
            first[schema.name] = min(first.get(schema.name, 10**6), schema.since_version)
    return first


def _unsupported(version: str, max_opset: int) -> frozenset[str]:
    """Ops a TensorRT `version` parser has no importer for.

    Never-imported ops, ops added in a later release, and ops newer than the parser's
    documented opset that no changelog entry adds (it cannot know them).
    """
    key = _version_key(version)
    later = {op for op, since in _ADDED_IN.items() if _version_key(since) > key}
    too_new = {
        op
        for op, opset in onnx_op_first_opsets().items()
        if opset > max_opset and op not in _ADDED_IN
    }
    return frozenset(_NEVER | later | too_new)


# Resize coordinate modes: release/7.0 builtin_op_importers.cpp importResize asserts
# `transformationMode == "asymmetric"` ("This version of TensorRT only supports asymmetric
# resize!") for every opset-11 Resize, sizes or scales (onnx/onnx-tensorrt#491,
# NVIDIA/TensorRT#422 with size=(128, 128)); release/7.1 and 7.2 assert "TensorRT only
# supports half pixel, pytorch half_pixel, and asymmetric tranformation mode for linear
# resizes when scales are provided!"; 8.0 "rehauled resize operator" (Changelog) accepts
# every mode but tf_crop_and_resize. Resize scales: importResize asserts
# `scales.is_weights() && "Resize scales must be an initializer!"` up to 8.x
# (onnx/onnx-tensorrt#483 on 7.0/7.1, pytorch/pytorch#90460 on 8.2.5, NVIDIA/TensorRT#2803).
_ALL_REDUCTIONS = frozenset({"add", "mul", "max", "min"})
_ONLY_ASYMMETRIC = frozenset({"asymmetric"})
_SCALE_MODES_71 = frozenset({"half_pixel", "pytorch_half_pixel", "asymmetric"})


def _trt(
    version: str,
    max_opset: int,
    *,
    branch: str,
    scale_modes: frozenset[str] | None,
    description: str,
    name: str | None = None,
    **facts: object,
) -> Target:
    key = _version_key(version)
    defaults: dict[str, object] = {
        "resize_cubic": key >= (8, 5),
        "gather_elements": key >= (7, 2),
        "scatter_nd_reduction_attr_refused": (10, 0) <= key < (10, 2),
        "resize_scales_must_be_constant": key < (10, 0),
        # Changelog 10.0 EA: "Added support for the `reduction` attribute in `ScatterElements`"
        "scatter_elements_reductions": _ALL_REDUCTIONS if key >= (10, 0) else frozenset(),
        "uint8_io_only": key >= (8, 6),
        "tensor_types": _tensor_types(key),
        "quantized_types": QUANTIZED_TYPES & _tensor_types(key),
        "constant_inputs": "foldable" if key >= (10, 0) else "initializer",
        "pool_dilations_refused": key >= (8, 0),
        # docs/operators.md, release/10.1-GA: "Only the first output `Y` is supported."
        "layernorm_one_output": key >= (10, 1),
    }
    defaults.update(facts)
    ref = branch if branch == "main" else f"release/{branch}"
    importers = "builtin_op_importers.cpp" if key < (9, 0) else "onnxOpImporters.cpp"
    return Target(
        name=name or f"tensorrt-{version}",
        description=description,
        unsupported_ops=_unsupported(version, max_opset),
        resize_linear_scale_modes=scale_modes,
        max_opset=max_opset,
        sources=(
            f"onnx/onnx-tensorrt@{ref}:docs/operators.md",
            "onnx/onnx-tensorrt@main:docs/Changelog.md",
            f"onnx/onnx-tensorrt@{ref}:{importers} (importResize)",
        ),
        **defaults,  # type: ignore[arg-type]
    )


def _build_table() -> dict[str, Target]:
    rows = [
        _trt(
            "7.0",
            11,
            branch="7.0",
            scale_modes=_ONLY_ASYMMETRIC,
            resize_coordinate_modes=_ONLY_ASYMMETRIC,
            description="TensorRT 7.0 (2019): Resize only in asymmetric mode, scales or sizes",
        ),
        _trt(
            "7.1",
            11,
            branch="7.1",
            scale_modes=_SCALE_MODES_71,
            description="TensorRT 7.1 (Jetson JetPack 4.4/4.5): no GatherElements; "
            "align_corners Resize only with sizes",
        ),
        _trt(
            "7.2",
            13,
            branch="7.2.1",
            scale_modes=_SCALE_MODES_71,
            description="TensorRT 7.2.x: GatherElements imported (as Gather on flattened data)",
        ),
        _trt(
            "8.0",
            13,
            branch="8.0",
            scale_modes=None,
            description="TensorRT 8.0: Resize rewritten, every coordinate mode but tf_crop_and_resize",
        ),
        _trt(
            "8.2",
            13,
            branch="8.2-GA",
            scale_modes=None,
            description="TensorRT 8.2: ScatterND, GatherND, ScatterElements native",
        ),
        _trt(
            "8.5",
            17,
            branch="8.5-GA",
            scale_modes=None,
            description="TensorRT 8.5: cubic Resize, NonZero, OneHot, GridSample",
        ),
        _trt(
            "8.6",
            17,
            branch="8.6-GA",
            scale_modes=None,
            description="TensorRT 8.6: LayerNormalization, GroupNormalization, IsInf",
        ),
        _trt(
            "10.0",
            20,
            branch="10.0-GA",
            scale_modes=None,
            description='TensorRT 10.0: ScatterND with a reduction attribute refused, even "none"',
        ),
        _trt(
            "10.1",
            20,
            branch="10.1-GA",
            scale_modes=None,
            description="TensorRT 10.1: as 10.0 (ScatterND reduction refused), plus DeformConv",
        ),
        _trt(
            "10.15",
            24,
            name="tensorrt-10",
            branch="main",
            scale_modes=None,
            description="TensorRT 10.2 and later 10.x (documented: 10.15, opsets 9-24)",
        ),
    ]
    newest = rows[-1]
    rows.append(
        Target(
            name="tensorrt-11",
            description="TensorRT 11: same parser code line as TensorRT-RTX 1.7; row copied from the "
            "newest parser checked here",
            unsupported_ops=_RTX_PARSER_UNSUPPORTED | _newer_than(_RTX_MAX_OPSET),
            resize_linear_scale_modes=None,
            resize_cubic=True,
            max_opset=_RTX_MAX_OPSET,
            resize_scales_must_be_constant=False,
            scatter_elements_reductions=_ALL_REDUCTIONS,
            uint8_io_only=True,
            scatter_elements_indices_within_data=True,
            tensor_types=newest.tensor_types,
            quantized_types=newest.quantized_types,
            constant_inputs="foldable",
            layernorm_one_output=True,
            int8_clip_mod_refused=True,
            sources=newest.sources
            + ("tensorrt_rtx 1.7 OnnxParser (run by tests/compat/test_targets.py)",),
        )
    )
    rows.append(
        Target(
            name="tensorrt-rtx",
            description="TensorRT-RTX 1.7 (pip tensorrt-rtx): checked against its OnnxParser on this machine",
            unsupported_ops=_RTX_UNSUPPORTED | _newer_than(_RTX_MAX_OPSET),
            resize_linear_scale_modes=None,
            resize_cubic=True,
            max_opset=_RTX_MAX_OPSET,
            resize_scales_must_be_constant=False,
            # Found by tests/compat/test_rtx_oracle.py against the tensorrt_rtx 1.7 parser.
            resize_tf_half_pixel_for_nn_strict=True,
            resize_linear_max_scaled_axes=3,
            resize_cubic_max_scaled_axes=2,
            uint8_io_only=True,
            maxpool_indices=False,
            scatter_elements_indices_within_data=True,
            tensor_types=newest.tensor_types,
            quantized_types=newest.quantized_types,
            constant_inputs="foldable",
            layernorm_one_output=True,
            # Found by tools/conformance.py on the ONNX backend node tests (RTX 1.7 parser/builder).
            uint8_input_readers=("Cast", "Identity", "Equal"),
            int8_clip_mod_refused=True,
            rtx_node_limits=True,
            nms_builder_refused=True,
            sources=(
                "tensorrt_rtx 1.7 OnnxParser (run by tests/compat/test_targets.py)",
                "onnx/onnx-tensorrt@main:docs/operators.md",
            ),
        )
    )
    return {t.name: t for t in rows}


TARGETS: dict[str, Target] = _build_table()
NEWEST_TARGET = "tensorrt-11"
# Kept for old imports: the target of the first releases. Commands now use `default_target()`.
DEFAULT_TARGET = "tensorrt-7.1"
_TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")


def default_target() -> tuple[str, str]:
    """(target name, why) for lint/fix without --target: the installed TensorRT, else the newest.

    Full TensorRT wins over TensorRT-RTX when both are installed (it is what `build` uses). Only
    package metadata is read: neither library is imported.
    """
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        for dist in _TRT_DISTRIBUTIONS:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
            return target_for_version(version), f"installed TensorRT {version}"
        return "tensorrt-10", "installed TensorRT (version unknown)"
    if importlib.util.find_spec("tensorrt_rtx") is not None:
        return "tensorrt-rtx", "installed TensorRT-RTX"
    return NEWEST_TARGET, "newest TensorRT; no TensorRT installed"


def target_for_version(version: str) -> str:
    """The table row that describes an installed TensorRT version ("10.13.0.35" -> tensorrt-10)."""
    numbers = tuple(int(p) for p in re.findall(r"\d+", version)[:2]) or (0,)
    if numbers[0] >= 11:
        return NEWEST_TARGET
    rows = [
        (key, tuple(int(p) for p in name.removeprefix("tensorrt-").split(".")))
        for name in TARGETS
        if re.fullmatch(r"tensorrt-\d+(\.\d+)?", name)
        for key in (name,)
    ]
    # "tensorrt-10" stands for 10.2 and later 10.x
    rows = [(k, (10, 2) if v == (10,) else v) for k, v in rows]
    fitting = [(v, k) for k, v in rows if v <= numbers + (99,) * (2 - len(numbers))]
    return max(fitting)[1] if fitting else min((v, k) for k, v in rows)[1]


def resolve_target(name: str | None) -> tuple[str, str]:
    """(target name, why): `name` as given (checked), or the default when None."""
    if name is None:
        return default_target()
    return get_target(name).name, "--target"


# Spellings users type for the same row.
_ALIASES: dict[str, str] = {
    "rtx": "tensorrt-rtx",
    "tensorrt-rtx-1.7": "tensorrt-rtx",
    "tensorrt-10.2": "tensorrt-10",
    "tensorrt-10.15": "tensorrt-10",
}


def get_target(name: str) -> Target:
    """The table row for `name` ("tensorrt-7.1", "7.1", "rtx"); UsageError listing known names."""
    key = name.strip().lower()
    if key and key[0].isdigit():
        key = f"tensorrt-{key}"
    key = _ALIASES.get(key, key)
    if key in TARGETS:
        return TARGETS[key]
    raise UsageError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}")
