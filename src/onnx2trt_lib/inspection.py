"""What a file holds, as plain data: `onnx2trt_lib.inspect` and `onnx2trt inspect --json`.

Kinds are recognised by content, not suffix: a TensorRT calibration cache starts with
`TRT-<version>-<Algorithm>`, a ranges JSON names its `onnx2trt-ranges/` format, an engine has
its `<engine>.json` sidecar (or a known magic), and anything protobuf reads as a model with a
graph is an ONNX model. Only what a kind needs is imported (a cache needs neither onnx nor numpy).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import UsageError


def file_kind(path: str | os.PathLike) -> str | None:
    """ "calibration-cache", "ranges", "engine", "onnx" or None, from the first 4 KiB."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"TRT-"):
        return "calibration-cache"
    if head.lstrip().startswith(b"{") and b"onnx2trt-ranges/" in head:
        return "ranges"
    from .build.engine import is_engine_artifact

    if is_engine_artifact(path):
        return "engine"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    return None


def describe(path: str | os.PathLike, *, target: str | None = None) -> dict[str, Any]:
    """The file's contents as a dict with a "kind" (see `file_kind`)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    kind = file_kind(path)
    if kind == "onnx":
        return describe_model(path, target=target)
    if kind == "calibration-cache":
        from .calib.cache import read_cache

        cache = read_cache(path)
        return {
            "kind": kind,
            "path": str(path),
            "version": cache.version,
            "algorithm": cache.algorithm,
            "tensors": [
                {"tensor": n, "scale": s, "amax": s * 127.0, "hex": f"{cache.bits[n]:08x}"}
                for n, s in cache.scales.items()
            ],
        }
    if kind == "ranges":
        from .calib.ranges import read_ranges_document

        return {"kind": kind, "path": str(path), **read_ranges_document(path)}
    if kind == "engine":
        from .build.engine import engine_path_for, inspect_engine

        return {"kind": kind, **inspect_engine(engine_path_for(path))}
    raise UsageError(
        f"{path}: not a file onnx2trt can inspect (expected an .onnx model, a TensorRT calibration "
        "cache, ranges JSON, or an engine with its .json sidecar)"
    )


def _dims(value: Any) -> list[int | str | None]:
    """[1, "batch", None]: a number, a symbolic name, or None for an unnamed dynamic axis."""
    out: list[int | str | None] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            out.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            out.append(dim.dim_param)
        else:
            out.append(None)
    return out


def _tensor_info(value: Any) -> dict[str, Any]:
    import onnx

    tensor_type = value.type.tensor_type
    elem = tensor_type.elem_type
    dtype = onnx.TensorProto.DataType.Name(elem).lower() if elem else "unknown"
    dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
    shape = _dims(value) if tensor_type.HasField("shape") else None
    return {"name": value.name, "dtype": dtype, "shape": shape}


def describe_model(
    model: str | os.PathLike | Any, *, target: str | None = None, lint: bool = True
) -> dict[str, Any]:
    """Inputs/outputs with their dynamic dims, opset, IR, op counts, weights, external data, and
    what `target`'s parser refuses (a lint summary; the installed/newest TensorRT by default)."""
    from ._io import external_data_files, load_model
    from .dims import dim_names

    proto = load_model(model, check=False)
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [_tensor_info(v) for v in proto.graph.input if v.name not in initializers]
    outputs = [_tensor_info(v) for v in proto.graph.output]
    ops: Counter[str] = Counter()

    def walk(graph: Any) -> None:
        for node in graph.node:
            ops[
                node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            ] += 1
            for attr in node.attribute:
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    walk(sub)

    walk(proto.graph)
    weights = sum(int(_numel(t)) for t in proto.graph.initializer)
    unnamed = [
        f"{v['name']}:{axis}"
        for v in inputs + outputs
        for axis, d in enumerate(v["shape"] or [])
        if d is None
    ]
    path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    external = [str(p) for p in external_data_files(path)] if path is not None else []
    report: dict[str, Any] = {
        "kind": "onnx",
        "path": str(path) if path is not None else None,
        "ir_version": int(proto.ir_version),
        "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": inputs,
        "outputs": outputs,
        "dynamic_dims": dim_names(proto),
        "unnamed_dynamic_axes": unnamed,
        "nodes": sum(ops.values()),
        "ops": dict(ops.most_common()),
        "initializers": len(proto.graph.initializer),
        "parameters": weights,
        "external_data": external,
        "external_data_bytes": sum(Path(p).stat().st_size for p in external),
    }
    if lint:
        report["lint"] = _lint_summary(proto, target)
    return report


def _numel(tensor: Any) -> int:
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count


def _lint_summary(proto: Any, target: str | None) -> dict[str, Any]:
    from .compat import lint_model
    from .compat.targets import resolve_target

    name, why = resolve_target(target)
    try:
        findings = lint_model(proto, name)
    except Exception as exc:  # noqa: BLE001 - inspect still shows the rest of the model
        return {"target": name, "why": why, "error": str(exc).splitlines()[0] if str(exc) else ""}
    rules = Counter(f.rule for f in findings)
    return {
        "target": name,
        "why": why,
        "findings": len(findings),
        "fixable": sum(f.fix_pass is not None for f in findings),
        "rules": dict(rules.most_common()),
        "fix_passes": sorted({f.fix_pass for f in findings if f.fix_pass}),
    }


def model_lines(report: dict[str, Any], *, limit: int | None = 200) -> list[str]:
    """What `onnx2trt inspect MODEL.onnx` prints."""

    def shape(dims: list | None) -> str:
        if dims is None:
            return "unknown shape"
        if not dims:
            return "scalar"
        # unnamed dynamic axes as ?, names as given (quoted when not a plain word, e.g. '?')
        shown = [
            "?" if d is None else d if isinstance(d, int) or d.isidentifier() else repr(d)
            for d in dims
        ]
        return "[" + ", ".join(str(d) for d in shown) + "]"

    opsets = ", ".join(f"{d} {v}" for d, v in report["opsets"].items())
    lines = [
        f"{report['path'] or 'model'}: ONNX model, IR {report['ir_version']}, opset {opsets}"
        + (f", from {report['producer']}" if report["producer"] else ""),
    ]
    for kind in ("inputs", "outputs"):
        for tensor in report[kind]:
            lines.append(
                f"  {kind[:-1]:<6} {tensor['name']}  {tensor['dtype']}  {shape(tensor['shape'])}"
            )
    if report["dynamic_dims"]:
        lines.append(
            "dynamic dimensions (rename or fix with `onnx2trt fix --rename-dim/--set-dim`):"
        )
        input_names = {t["name"] for t in report["inputs"]}
        for name, where in report["dynamic_dims"].items():
            on_inputs = [w for w in where if w.rpartition(":")[0] in input_names]
            shared = (
                "  (one name on several input axes: TensorRT takes them as equal)"
                if len(on_inputs) > 1
                else ""
            )
            lines.append(f"  {name}: {', '.join(where)}{shared}")
    if report["unnamed_dynamic_axes"]:
        lines.append(f"unnamed dynamic axes: {', '.join(report['unnamed_dynamic_axes'])}")
    size = report["external_data_bytes"]
    lines.append(
        f"{report['nodes']} nodes, {report['initializers']} initializers "
        f"({report['parameters']:,} parameters)"
        + (
            f", external data: {', '.join(report['external_data'])} ({size:,} bytes)"
            if report["external_data"]
            else ""
        )
    )
    ops = list(report["ops"].items())
    shown = ops if limit is None else ops[:limit]
    lines.append(
        "ops: "
        + ", ".join(f"{op} {n}" for op, n in shown)
        + (" ..." if len(shown) < len(ops) else "")
    )
    lint = report.get("lint")
    if lint:
        head = f"lint for {lint['target']} ({lint['why']}): "
        if "error" in lint:
            lines.append(head + f"not run ({lint['error']})")
        elif not lint["findings"]:
            lines.append(head + "nothing refused")
        else:
            rules = ", ".join(f"{r} {n}" for r, n in lint["rules"].items())
            lines.append(
                head + f"{lint['findings']} finding(s), {lint['fixable']} fixable ({rules}); "
                f"details: onnx2trt lint MODEL --target {lint['target']}"
            )
    return lines
