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
  tests/lint/test_targets.py::test_rtx_parser_agrees_with_table.
"""

from __future__ import annotations

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
    # Resize features of opset 18/19; False = the parser refuses the node.
    resize_antialias: bool = False
    resize_tf_crop_and_resize: bool = False
    resize_half_pixel_symmetric: bool = False
    resize_keep_aspect_ratio_policy: bool = False  # any policy other than "stretch"
    # Resize `scales` must be a constant (initializer / Constant node), not a computed tensor.
    resize_scales_must_be_constant: bool = True
    # Where the facts come from (repo@branch:path), for docs and error messages.
    sources: tuple[str, ...] = ()

    def accepts_scale_mode(self, mode: str) -> bool:
        modes = self.resize_linear_scale_modes
        return modes is None or mode in modes
