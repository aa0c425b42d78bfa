"""`fix-resize`: rewrite Resize/Upsample nodes a TensorRT parser refuses into an exact equivalent it accepts.

Why: the TensorRT 7.1/7.2 ONNX parser refuses a linear (or cubic)
Resize given `scales` unless coordinate_transformation_mode is half_pixel,
pytorch_half_pixel or asymmetric (7.0: asymmetric only); `F.interpolate(...,
align_corners=True, scale_factor=2)` exports exactly that. Giving the same Resize `sizes`
instead of `scales` is accepted. This pass does that rewrite where it is provably exact,
and turns opset 7-10 `Upsample` into `Resize`.

The algebra (ONNX Resize spec, per resized axis; `in` = input length, `s` = scale):

* With scales the output length is `out = floor(in * s)`. ONNX Runtime evaluates the
  product in float32 (`static_cast<int64_t>(scale * in)`); the graph we emit does the same
  (Cast -> Mul -> Floor -> Cast), so out is identical, not merely close.
* With sizes the spec uses `s' = out / in` in every coordinate formula. So the output
  *values* are unchanged iff the formula does not depend on s, or s' == s:
    - align_corners: `x_in = x_out * (in - 1) / (out - 1)` uses only in and out: always
      exact, for any scale and for dynamic dims.
    - half_pixel, pytorch_half_pixel, asymmetric, half_pixel_symmetric: use s. Exact iff
      float32(out) / float32(in) == s (checked per axis). Static dims: checked on the
      known `in` (shapes the graph does not state come from one lazy ONNX shape
      inference). Dynamic dims: only a scale that is an integer k >= 1 gives out = k * in
      and out / in = k for every in (below 2**24); any other scale is exact for some input
      sizes only (1.5 needs an even `in`), so the node is skipped with that reason.
    - half_pixel_symmetric: `x_in = in/2 * (1 - out/(s*in)) + (x_out + 0.5)/s - 0.5`; when
      out/in == s the first term is 0 and it *is* half_pixel. TensorRT-RTX refuses
      half_pixel_symmetric in any form, so it becomes half_pixel (keeping scales when the
      target accepts half_pixel with scales, else with sizes).
    - tf_half_pixel_for_nn: `x_in = (x_out + 0.5)/s`; no other mode equals it and
      TensorRT-RTX takes it only with scales -> skipped with the reason.
    - tf_crop_and_resize: the roi input crops before resizing; sizes cannot express the
      crop exactly in general -> skipped.
* antialias=1 (opset 18+) widens the filter by 1/s for downscaling; the parsers refuse it
  in any form, so rewriting gains nothing -> skipped with the reason.
* keep_aspect_ratio_policy (opset 18+) only applies to `sizes`; with scales ONNX shape
  inference (and so ONNX Runtime) rejects any policy but stretch: such a node has no
  defined result to keep -> skipped. The rewrite writes no policy (stretch).
* `axes` (opset 18+): scales list only those axes. The rewrite emits full-rank sizes
  (other axes keep their length) and drops the attribute, which every parser accepts.
* roi is ignored by every mode but tf_crop_and_resize; the rewrite drops it. Opset 11/12
  need the roi and scales inputs present: they become empty float constants (what the
  PyTorch exporter writes); opset 13+ use empty names.
* Scales fed at run time (graph input or computed) cannot be checked: skipped.

Upsample (opsets 7-9; deprecated at 10) is Resize with asymmetric coordinates and, for
nearest, floor rounding. At opset >= 11 it becomes Resize with those attributes spelled
out; at opset 10 it becomes Resize-10 (same semantics). An opset 7-9 model is raised to
opset 10 only when no other node in it changes meaning between its opset and 10 (ops
whose change is only new types or defaulted attributes, e.g. Gemm, MaxPool, are fine;
Slice and TopK move attributes to inputs, BatchNormalization drops `spatial`); otherwise
the node is skipped and the reason says to run onnx.version_converter first.

Only `mode` in `interp_modes` (default linear and cubic: the parsers' restriction is
for those) is rewritten; pass interp_modes={"linear", "cubic", "nearest"} to rewrite
nearest resizes too (the same algebra holds: nearest rounds the same x_in).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .._weights import infer_graph_shapes
from ._infra import PassResult, SkippedNode, result
from ._names import FreshNames

log = logging.getLogger(__name__)

DEFAULT_ACCEPTED_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "asymmetric"})
DEFAULT_INTERP_MODES = frozenset({"linear", "cubic"})
_KNOWN_INTERP_MODES = frozenset({"nearest", "linear", "cubic"})
_SCALE_FREE_MODES = frozenset({"align_corners"})  # coordinate formula without s
_ONNX_DOMAINS = ("", "ai.onnx", None)
_NO_MATCH: tuple[None, None] = (None, None)
# ops whose definitions change between opsets 7 and 10 only by new types, or new attributes
# whose defaults keep the old behaviour: raising a model's opset to 10 leaves them exact.
_COMPATIBLE_BY_10 = frozenset(
    {
        "Constant",
        "Cast",
        "Gemm",
        "MatMul",
        "Flatten",
        "PRelu",
        "Greater",
        "Less",
        "MaxPool",
        "AveragePool",
        "Dropout",
    }
)


class FixResizePass:
    """Scales -> sizes on Resize nodes whose coordinate mode the target refuses; Upsample -> Resize."""

    name = "fix-resize"
    op_types: tuple[str, ...] = ("Resize", "Upsample")

    def __init__(
        self,
        *,
        accepted_modes: frozenset[str] | None = None,
        interp_modes: frozenset[str] | None = None,
    ) -> None:
        self.accepted_modes = frozenset(
            DEFAULT_ACCEPTED_MODES if accepted_modes is None else accepted_modes
        )
        self.interp_modes = frozenset(
            DEFAULT_INTERP_MODES if interp_modes is None else interp_modes
        )
        unknown = self.interp_modes - _KNOWN_INTERP_MODES
        if unknown:
            raise ValueError(
                f"fix-resize: unknown interp_modes {sorted(unknown)}; use some of {sorted(_KNOWN_INTERP_MODES)}"
            )

    def run(self, graph: gs.Graph) -> PassResult:
        counts = {
            "upsample_to_resize": 0,
            "scales_to_sizes": 0,
            "symmetric_to_half_pixel": 0,
            "opset_raised": 0,
        }
        skipped: list[SkippedNode] = []
        graphs = [graph, *graph.subgraphs(recursive=True)]
        fresh = FreshNames(graph)  # one for all graphs: a branch sees the names around it
        # new nodes go right before the node they feed; inserted in one sweep per graph at the
        # end (list.index on graph-surgeon nodes compares structurally: quadratic on big graphs)
        inserts: dict[int, dict[int, list[gs.Node]]] = {id(g): {} for g in graphs}
        shapes = _ShapeOracle(graph)
        for g in graphs:
            for node in [n for n in g.nodes if n.op == "Upsample" and n.domain in _ONNX_DOMAINS]:
                outcome = _upsample_to_resize(graph, node, fresh, inserts[id(g)])
                if isinstance(outcome, str):
                    skipped.append(SkippedNode(node.name, node.op, outcome))
                else:
                    counts["upsample_to_resize"] += 1
                    counts["opset_raised"] += outcome
        for g in graphs:
            for node in [n for n in g.nodes if n.op == "Resize" and n.domain in _ONNX_DOMAINS]:
                changed, reason = self._scales_to_sizes(
                    graph.opset, node, fresh, shapes, inserts[id(g)]
                )
                if changed:
                    counts[changed] += 1
                elif reason:
                    skipped.append(SkippedNode(node.name, node.op, reason))
        for g in graphs:
            if inserts[id(g)]:
                g.nodes = [new for n in g.nodes for new in (*inserts[id(g)].get(id(n), ()), n)]
        for s in skipped:
            log.info("fix-resize: skipped %s: %s", s.node, s.reason)
        return result(self.name, counts, skipped)

    # -- Resize with scales -> Resize with sizes -------------------------------------------
    def _scales_to_sizes(
        self,
        opset: int,
        node: gs.Node,
        fresh: FreshNames,
        shapes: _ShapeOracle,
        inserts: dict[int, list[gs.Node]],
    ) -> tuple[str | None, str | None]:
        """(count key, None) when rewritten, (None, reason) when skipped, (None, None) when no match."""
        if opset < 11:
            return _NO_MATCH  # Resize-10 has no coordinate modes (asymmetric) and no sizes input
        attrs = node.attrs
        mode = _text(attrs.get("mode", "nearest"))
        ctm = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
        if mode not in self.interp_modes or ctm in self.accepted_modes:
            return _NO_MATCH
        x = node.inputs[0]
        scales = _input(node, 2)
        sizes = _input(node, 3)
        if sizes is not None and not _is_empty_constant(sizes):
            return _NO_MATCH  # already uses sizes
        if scales is None or _is_empty_constant(scales):
            return _NO_MATCH
        if ctm == "tf_crop_and_resize":
            return (
                None,
                "coordinate_transformation_mode=tf_crop_and_resize crops by roi; sizes cannot express that exactly",
            )
        if ctm == "tf_half_pixel_for_nn":
            return None, (
                "coordinate_transformation_mode=tf_half_pixel_for_nn has no exact equivalent that parsers take "
                "with sizes (TensorRT-RTX 1.7 refuses it there); add it to accepted_modes if the target takes scales"
            )
        if int(attrs.get("antialias", 0)):
            return (
                None,
                "antialias=1: the scale sets the filter width and TensorRT parsers refuse antialias in any form",
            )
        policy = _text(attrs.get("keep_aspect_ratio_policy", "stretch"))
        if policy != "stretch":
            return None, (
                f"keep_aspect_ratio_policy={policy} only applies to sizes; with scales ONNX shape inference "
                "rejects the node, so there is no defined result to keep"
            )
        scale_values = _constant_values(scales)
        if scale_values is None:
            return (
                None,
                f"scales {scales.name!r} are computed at run time (not a constant); cannot check out/in == scale",
            )
        scale_values = np.asarray(scale_values, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(scale_values)) or np.any(scale_values <= 0):
            return None, f"scales {scale_values.tolist()} are not all positive and finite"
        x_shape = shapes.shape_of(x)
        rank = len(x_shape) if x_shape is not None else None
        axes = attrs.get("axes")
        if axes is not None:
            if rank is None:
                return (
                    None,
                    "uses the axes attribute but the input rank is unknown; run infer-shapes first",
                )
            axes = [int(a) + rank if int(a) < 0 else int(a) for a in axes]
            if sorted(set(axes)) != sorted(axes) or any(not 0 <= a < rank for a in axes):
                return None, f"axes attribute {list(attrs['axes'])} is invalid for rank {rank}"
        else:
            axes = list(range(len(scale_values)))
            if rank is not None and rank != len(scale_values):
                return None, f"{len(scale_values)} scales for an input of rank {rank}"
            rank = len(scale_values)
        if len(axes) != len(scale_values):
            return None, f"{len(scale_values)} scales for {len(axes)} axes"
        full = np.ones(rank, dtype=np.float32)
        full[axes] = scale_values
        dims = list(x_shape) if x_shape is not None else [None] * rank

        out_static: list[int] = []
        for axis, (dim, s) in enumerate(zip(dims, full, strict=True)):
            if isinstance(dim, (int, np.integer)) and dim >= 0:
                out = int(np.floor(np.float32(dim) * s))
                if out < 1:
                    return None, f"axis {axis}: floor({dim} * {float(s)}) = {out}, an empty output"
                if ctm not in _SCALE_FREE_MODES and np.float32(out) / np.float32(dim) != s:
                    return None, (
                        f"axis {axis}: {ctm} uses the scale, and out/in = {out}/{dim} != {float(s)}; "
                        "sizes would change the result"
                    )
                out_static.append(out)
            elif s == 1.0 or ctm in _SCALE_FREE_MODES or (float(s).is_integer() and s >= 1):
                out_static.append(-1)
            else:
                return None, (
                    f"axis {axis} is dynamic and {ctm} uses the scale {float(s)}: out/in == scale holds "
                    "only for some input sizes (exact only for integer scales or align_corners)"
                )
        if ctm == "half_pixel_symmetric":
            # with out/in == s its offset term vanishes: it is half_pixel, which parsers know
            node.attrs["coordinate_transformation_mode"] = "half_pixel"
            if "half_pixel" in self.accepted_modes:
                return "symmetric_to_half_pixel", None
        if all(o >= 0 for o in out_static):
            sizes_tensor: gs.Tensor = gs.Constant(
                fresh(f"{node.name}_sizes"), np.array(out_static, dtype=np.int64)
            )
        else:
            sizes_tensor, new_nodes = _sizes_in_graph(node, x, full, fresh)
            inserts.setdefault(id(node), []).extend(new_nodes)
        node.inputs = [x, *_empty_roi_scales(node, opset, fresh), sizes_tensor]
        node.attrs.pop("axes", None)
        node.attrs.pop("keep_aspect_ratio_policy", None)
        log.debug("fix-resize: %s scales %s -> sizes %s", node.name, full.tolist(), out_static)
        return "scales_to_sizes", None


# -- Upsample -> Resize ------------------------------------------------------------------------
def _upsample_to_resize(
    root: gs.Graph, node: gs.Node, fresh: FreshNames, inserts: dict[int, list[gs.Node]]
) -> str | int:
    """Rewrite in place; returns 1 if the model's opset had to be raised, 0 if not, or a skip reason."""
    mode = _text(node.attrs.get("mode", "nearest"))
    mode = {"bilinear": "linear"}.get(mode, mode)
    if mode not in ("nearest", "linear"):
        return f"Upsample mode {mode!r} is not nearest or linear"
    if "scales" not in node.attrs and _input(node, 1) is None:
        return "Upsample without scales"
    opset = root.opset
    raised = 0
    if opset < 10:
        blockers = _ops_changed_between(root, opset, 10, ignore={"Upsample", *_COMPATIBLE_BY_10})
        if blockers:
            return (
                f"Resize needs opset 10 but the model is opset {opset} and uses {', '.join(blockers)}, "
                "whose definition changes by opset 10; convert it with onnx.version_converter first"
            )
        _set_opset(root, 10)
        opset, raised = 10, 1
    if "scales" in node.attrs:  # opset 7/8: an attribute
        # a Constant node, not an initializer: IR < 4 models must list initializers as graph inputs
        values = gs.Constant(
            fresh(f"{node.name}_scales_value"), np.asarray(node.attrs["scales"], dtype=np.float32)
        )
        scales = gs.Variable(
            fresh(f"{node.name}_scales"), dtype=np.float32, shape=list(values.shape)
        )
        constant = gs.Node(
            "Constant", fresh(f"{node.name}_scales_node"), {"value": values}, [], [scales]
        )
        inserts.setdefault(id(node), []).append(constant)
    else:
        scales = _input(node, 1)
    x = node.inputs[0]
    if opset == 10:
        node.inputs = [x, scales]
        node.attrs = {"mode": mode}
    else:
        node.inputs = [x, *_empty_roi_scales(node, opset, fresh)[:1], scales]
        node.attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric"}
        if mode == "nearest":
            node.attrs["nearest_mode"] = "floor"
    node.op = "Resize"
    return raised


def _ops_changed_between(graph: gs.Graph, old: int, new: int, *, ignore: set[str]) -> list[str]:
    changed = set()
    for g in [graph, *graph.subgraphs(recursive=True)]:
        for n in g.nodes:
            if n.op in ignore or n.domain not in _ONNX_DOMAINS:
                continue
            try:
                before = onnx.defs.get_schema(n.op, old, "").since_version
                after = onnx.defs.get_schema(n.op, new, "").since_version
            except onnx.defs.SchemaError:
                changed.add(n.op)
                continue
            if before != after:
                changed.add(n.op)
    return sorted(changed)


def _set_opset(graph: gs.Graph, version: int) -> None:
    graph.opset = version
    if graph.import_domains is not None:  # new protos: the old ones belong to the caller's model
        graph.import_domains = [
            onnx.helper.make_opsetid(
                o.domain, version if o.domain in ("", "ai.onnx") else o.version
            )
            for o in graph.import_domains
        ]


# -- helpers ---------------------------------------------------------------------------------
def _sizes_in_graph(
    node: gs.Node, x: gs.Tensor, full_scales: np.ndarray, fresh: FreshNames
) -> tuple[gs.Variable, list[gs.Node]]:
    """sizes = Cast<int64>(Floor(Cast<float>(Shape(x)) * scales)): floor(in * s) in float32, like ORT."""
    base = node.name or "resize"

    def var(suffix: str, dtype) -> gs.Variable:
        return gs.Variable(fresh(f"{base}_{suffix}"), dtype=dtype, shape=[len(full_scales)])

    shape, shape_f, scaled, floored, sizes = (
        var("shape", np.int64),
        var("shape_f", np.float32),
        var("scaled", np.float32),
        var("floor", np.float32),
        var("sizes", np.int64),
    )
    scale_const = gs.Constant(fresh(f"{base}_full_scales"), full_scales.astype(np.float32))
    new_nodes = [
        gs.Node("Shape", fresh(f"{base}_shape"), inputs=[x], outputs=[shape]),
        gs.Node(
            "Cast", fresh(f"{base}_to_float"), {"to": onnx.TensorProto.FLOAT}, [shape], [shape_f]
        ),
        gs.Node(
            "Mul", fresh(f"{base}_mul_scales"), inputs=[shape_f, scale_const], outputs=[scaled]
        ),
        gs.Node("Floor", fresh(f"{base}_floor"), inputs=[scaled], outputs=[floored]),
        gs.Node(
            "Cast", fresh(f"{base}_to_int64"), {"to": onnx.TensorProto.INT64}, [floored], [sizes]
        ),
    ]
    return sizes, new_nodes


def _empty_roi_scales(node: gs.Node, opset: int, fresh: FreshNames) -> list[gs.Tensor]:
    """The roi and scales slots when sizes are given: empty constants at opset 11/12, empty names later."""
    if opset >= 13:
        return [gs.Variable.empty(), gs.Variable.empty()]
    base = node.name or "resize"
    return [
        gs.Constant(fresh(f"{base}_roi_empty"), np.zeros(0, dtype=np.float32)),
        gs.Constant(fresh(f"{base}_scales_empty"), np.zeros(0, dtype=np.float32)),
    ]


def _input(node: gs.Node, index: int) -> gs.Tensor | None:
    if len(node.inputs) <= index:
        return None
    tensor = node.inputs[index]
    return None if tensor.is_empty() else tensor


def _constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if isinstance(attrs.get("value"), gs.Constant):
            return np.asarray(attrs["value"].values)
        for key in ("value_floats", "value_float"):
            if key in attrs:
                return np.asarray(attrs[key], dtype=np.float32)
    return None


def _is_empty_constant(tensor: gs.Tensor) -> bool:
    values = _constant_values(tensor)
    return values is not None and values.size == 0


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _ShapeOracle:
    """Shapes of tensors; where the graph states none, ONNX shape inference runs once (lazily).

    Legacy-exporter models often carry no shapes for intermediate tensors; without them a
    static dim would look dynamic and get in-graph size arithmetic instead of a constant.
    The graph itself is not annotated (that is infer-shapes' job).
    """

    def __init__(self, graph: gs.Graph) -> None:
        self._graph = graph
        self._inferred: dict[str, list] | None = None

    def shape_of(self, tensor: gs.Tensor) -> list | None:
        if tensor.shape is not None and all(
            isinstance(d, (int, np.integer)) and d >= 0 for d in tensor.shape
        ):
            return list(tensor.shape)
        if self._inferred is None:
            self._inferred = self._infer()
        inferred = self._inferred.get(tensor.name)
        if inferred is None:
            return None if tensor.shape is None else list(tensor.shape)
        if tensor.shape is not None and len(tensor.shape) == len(inferred):
            # keep what the graph states where inference learnt nothing better
            return [
                i if isinstance(i, int) else d for i, d in zip(inferred, tensor.shape, strict=True)
            ]
        return inferred

    def _infer(self) -> dict[str, list]:
        try:
            inferred = infer_graph_shapes(self._graph, strict_mode=False, data_prop=True)
        except Exception as exc:  # no inference is not fatal: shapes stay unknown (dynamic path)
            log.info(
                "fix-resize: shape inference failed (%s); unknown dims are treated as dynamic", exc
            )
            return {}
        shapes: dict[str, list] = {}
        for vi in (
            list(inferred.graph.value_info)
            + list(inferred.graph.output)
            + list(inferred.graph.input)
        ):
            tensor_type = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and tensor_type.HasField("shape"):
                shapes[vi.name] = [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in tensor_type.shape.dim
                ]
        return shapes
