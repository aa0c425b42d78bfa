"""Rewrite the symbolic dimensions of a model's inputs and outputs: `fix --set-dim/--rename-dim`.

Exporters name dynamic axes freely, and sometimes give several axes the same name ("?" for both
height and width in PaddleOCR's classifier), which tells TensorRT they are always equal and
makes a 48x192 profile impossible. A dimension is addressed by its name (every axis that
carries it, value_info included) or by `TENSOR:AXIS` (one axis of one graph input or output).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import onnx

from .errors import UsageError


@dataclass(frozen=True)
class DimRef:
    """A dimension by name (`name`) or by graph input/output and axis (`tensor`, `axis`)."""

    name: str | None = None
    tensor: str | None = None
    axis: int | None = None

    def __str__(self) -> str:
        return self.name if self.name is not None else f"{self.tensor}:{self.axis}"


def parse_dim_specs(
    specs: Iterable[str] | Mapping[str, object], option: str
) -> list[tuple[str, str]]:
    """`["batch=1", "x:2=48"]` or {"batch": 1} -> [("batch", "1"), ("x:2", "48")]."""
    if isinstance(specs, Mapping):
        return [(str(k), str(v)) for k, v in specs.items()]
    pairs = []
    for spec in specs:
        left, sep, right = str(spec).rpartition("=")
        if not sep or not left.strip() or not right.strip():
            raise UsageError(f"{option} {spec!r}: give OLD=NEW, e.g. {option} batch=1 or x:2=48")
        pairs.append((left.strip(), right.strip()))
    return pairs


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _graphs(sub)


def _resolve(model: onnx.ModelProto, key: str, option: str) -> DimRef:
    io = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    tensor, sep, axis = key.rpartition(":")
    if sep and tensor in io and axis.lstrip("-").isdigit():
        rank = len(io[tensor].type.tensor_type.shape.dim)
        index = int(axis)
        if not -rank <= index < rank:
            raise UsageError(f"{option} {key}: {tensor!r} has {rank} axes, no axis {index}")
        return DimRef(tensor=tensor, axis=index % rank)
    names = dim_names(model)
    if key not in names:
        known = ", ".join(sorted(names)) or "none"
        raise UsageError(
            f"{option} {key}: no dimension of that name (the model's dimension names: {known}; "
            "or address one axis as INPUT:AXIS)"
        )
    return DimRef(name=key)


def dim_names(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Symbolic dimension name -> the graph inputs/outputs (`tensor:axis`) that carry it."""
    found: dict[str, list[str]] = {}
    for value in [*model.graph.input, *model.graph.output]:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param"):
                found.setdefault(dim.dim_param, []).append(f"{value.name}:{axis}")
    return found


def rewrite_dims(
    model: onnx.ModelProto,
    *,
    set_dims: Sequence[str] | Mapping[str, int] = (),
    rename_dims: Sequence[str] | Mapping[str, str] = (),
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` with dimensions fixed to numbers (`set_dims`) or renamed (`rename_dims`).

    Returns (model, one line per change). Unknown names and axes are one-line UsageErrors.
    """
    edits: list[tuple[DimRef, onnx.TensorShapeProto.Dimension]] = []
    for key, value in parse_dim_specs(set_dims, "--set-dim"):
        if not value.isdigit() or int(value) < 1 or int(value) >= 2**63:
            raise UsageError(f"--set-dim {key}={value}: the value must be a positive integer")
        edits.append(
            (
                _resolve(model, key, "--set-dim"),
                onnx.TensorShapeProto.Dimension(dim_value=int(value)),
            )
        )
    for key, value in parse_dim_specs(rename_dims, "--rename-dim"):
        if value.isdigit():
            raise UsageError(
                f"--rename-dim {key}={value}: a number is --set-dim, a name is --rename-dim"
            )
        edits.append(
            (_resolve(model, key, "--rename-dim"), onnx.TensorShapeProto.Dimension(dim_param=value))
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    changes: list[str] = []
    for ref, new in edits:
        count = 0
        for graph in _graphs(out.graph):
            for value in [*graph.input, *graph.output, *graph.value_info]:
                if ref.tensor is not None and (graph is not out.graph or value.name != ref.tensor):
                    continue
                dims = value.type.tensor_type.shape.dim
                for axis, dim in enumerate(dims):
                    hit = (
                        axis == ref.axis
                        if ref.tensor is not None
                        else dim.HasField("dim_param") and dim.dim_param == ref.name
                    )
                    if hit:
                        dim.Clear()
                        dim.CopyFrom(new)
                        count += 1
        shown = new.dim_param if new.HasField("dim_param") else str(new.dim_value)
        changes.append(f"dimension {ref} -> {shown} ({count} place(s))")
    return out, changes
