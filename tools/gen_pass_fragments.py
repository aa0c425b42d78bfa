"""Fill the before/after graph fragments of docs/passes/*.md from real tiny models.

    python tools/gen_pass_fragments.py           # rewrite the fragments in docs/passes/
    python tools/gen_pass_fragments.py --check   # exit 1 if any page's fragment is out of date

Each page has a block between `<!-- fragment:begin -->` and `<!-- fragment:end -->`; this
script builds the page's tiny model with onnx.helper, runs the pass through a PassManager
(as `onnx2trt fix --passes NAME` does), prints both node lists, and runs both models in
ONNX Runtime on the same random input to state the largest output difference.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "docs" / "passes"
BEGIN, END = "<!-- fragment:begin -->", "<!-- fragment:end -->"
_FLOAT = TensorProto.FLOAT


# ---------------------------------------------------------------- printing


def _short(values: np.ndarray) -> str:
    """Small constants inline with their nesting ([[0] [4] [8]] is 3x1), big ones as <dtype shape>."""
    if values.size > 8:
        return f"<{values.dtype} {'x'.join(map(str, values.shape))}>"
    if values.ndim == 0:
        return (
            f"{values.item():g}" if np.issubdtype(values.dtype, np.floating) else str(values.item())
        )
    return "[" + " ".join(_short(v) for v in values) + "]"


def _type_of(model: onnx.ModelProto) -> dict[str, str]:
    out = {}
    graph = model.graph
    for vi in (*graph.input, *graph.value_info, *graph.output):
        t = vi.type.tensor_type
        if not t.elem_type:
            continue
        dims = "x".join(
            str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
            for d in t.shape.dim
        )
        out[vi.name] = (
            f"{helper.tensor_dtype_to_np_dtype(t.elem_type)}[{dims}]"
            if t.HasField("shape")
            else str(helper.tensor_dtype_to_np_dtype(t.elem_type))
        )
    return out


def node_lines(model: onnx.ModelProto, *, types: bool = False) -> list[str]:
    """One line per node: `outputs = Op(inputs) attrs`; small constants shown inline."""
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    typed = _type_of(model) if types else {}

    def arg(name: str) -> str:
        if name == "":
            return "''"
        if name in consts:
            return _short(consts[name])
        return name + (f": {typed[name]}" if name in typed else "")

    lines = [f"input  {', '.join(arg(i.name) for i in model.graph.input)}"]
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        attrs = []
        for a in n.attribute:
            value = helper.get_attribute_value(a)
            if isinstance(value, bytes):
                value = value.decode()
            elif a.name == "to":
                value = TensorProto.DataType.Name(value)
            elif isinstance(value, TensorProto):
                value = _short(numpy_helper.to_array(value))
            attrs.append(f"{a.name}={value}")
        outs = ", ".join(arg(o) for o in n.output)
        lines.append(
            f"{outs} = {n.op_type}({', '.join(arg(i) for i in n.input)})"
            + (f"  {' '.join(attrs)}" if attrs else "")
        )
    lines.append(f"output {', '.join(arg(o.name) for o in model.graph.output)}")
    return lines


# ---------------------------------------------------------------- the tiny models


def _model(nodes, inputs, outputs, inits=(), opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "fragment", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _const(name: str, values: Any, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def resize_static() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                name="up",
                mode="linear",
                coordinate_transformation_mode="align_corners",
            )
        ],
        [helper.make_tensor_value_info("x", _FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", _FLOAT, [1, 3, 8, 8])],
        [_const("scales", [1, 1, 2, 2])],
    )


def resize_dynamic() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                name="up",
                mode="linear",
                coordinate_transformation_mode="align_corners",
            )
        ],
        [helper.make_tensor_value_info("x", _FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", _FLOAT, [1, 3, "h2", "w2"])],
        [_const("scales", [1, 1, 2, 2])],
    )


def gather_elements() -> onnx.ModelProto:
    return _model(
        [helper.make_node("GatherElements", ["data", "idx"], ["y"], name="gather", axis=1)],
        [
            helper.make_tensor_value_info("data", _FLOAT, [3, 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [3, 2]),
        ],
        [helper.make_tensor_value_info("y", _FLOAT, [3, 2])],
    )


def scatter_nd() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node(
                "ScatterND", ["x", "where", "upd"], ["y"], name="assign", reduction="none"
            )
        ],
        [
            helper.make_tensor_value_info("x", _FLOAT, [4, 3]),
            helper.make_tensor_value_info("upd", _FLOAT, [2, 3]),
        ],
        [helper.make_tensor_value_info("y", _FLOAT, [4, 3])],
        [_const("where", [[1], [3]], np.int64)],
        opset=18,
    )


def computed_scale() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node("Add", ["a", "b"], ["ab"], name="add_consts"),
            helper.make_node("Sqrt", ["ab"], ["s"], name="sqrt_const"),
            helper.make_node("Mul", ["x", "s"], ["y"], name="scale"),
        ],
        [helper.make_tensor_value_info("x", _FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", _FLOAT, [1, 4])],
        [_const("a", [3.0]), _const("b", [6.0])],
    )


def dead_branch() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Sigmoid", ["x"], ["unused"], name="debug_probe"),
            helper.make_node("Mul", ["r", "two"], ["y"], name="double"),
        ],
        [helper.make_tensor_value_info("x", _FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", _FLOAT, [1, 4])],
        [_const("two", [2.0]), _const("stale_weight", np.ones((2, 2)))],
    )


def conv_relu_pool() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return _model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("GlobalAveragePool", ["r"], ["y"], name="pool"),
        ],
        [helper.make_tensor_value_info("x", _FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", _FLOAT, [1, 4, 1, 1])],
        [_const("w", rng.normal(size=(4, 3, 3, 3)) * 0.3), _const("b", rng.normal(size=4) * 0.1)],
    )


# ---------------------------------------------------------------- running


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # the cleanup example's unused initializer is on purpose
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def _feeds(model: onnx.ModelProto, dims: dict[str, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {}
    for vi in model.graph.input:
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else dims[d.dim_param] for d in t.shape.dim]
        if t.elem_type == TensorProto.INT64:
            feeds[vi.name] = rng.integers(-4, 4, size=shape).astype(
                np.int64
            )  # GatherElements: negatives too
        else:
            feeds[vi.name] = rng.normal(size=shape).astype(np.float32)
    return feeds


def make_pass(name: str, **options: Any) -> Any:
    """The pass called `name`: from the registry, else from onnx2trt_lib.passes.<name with _>."""
    import importlib
    import inspect

    from onnx2trt_lib.passes import registered_passes

    table = registered_passes()
    if name in table:
        return table[name](**options)
    module = importlib.import_module(f"onnx2trt_lib.passes.{name.replace('-', '_')}")
    cls = next(
        c for c in vars(module).values() if inspect.isclass(c) and getattr(c, "name", None) == name
    )
    return cls(**options)


def fragment(
    make: Callable[[], onnx.ModelProto],
    pass_name: str,
    *,
    options: dict | None = None,
    dims: dict[str, int] | None = None,
    types: bool = False,
    title: str | None = None,
) -> str:
    """The text block of one example: before, after, the pass counts and the ORT difference."""
    from onnx2trt_lib.passes import PassManager

    before = make()
    after, report = PassManager([make_pass(pass_name, **(options or {}))]).run(before)
    onnx.checker.check_model(after)
    feeds = _feeds(before, dims or {})
    ref, out = _run(before, feeds), _run(after, feeds)
    diff = max(
        float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        for a, b in zip(ref, out, strict=True)
    )
    counts = (
        ", ".join(f"{k}={v}" for k, v in report.records[0].result.counts.items() if v)
        or "no change"
    )
    shape = ", ".join(f"{k}: {'x'.join(map(str, v.shape))}" for k, v in feeds.items())
    lines = [
        f"# {title}" if title else None,
        "# before",
        *node_lines(before, types=types),
        "",
        f"# after {pass_name}: {counts}",
        *node_lines(after, types=types),
        "",
        f"# ONNX Runtime on the same random input ({shape}): max |before - after| = {diff:.3g}",
    ]
    return "\n".join(line for line in lines if line is not None)


EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "fix-resize": [
        {"make": resize_static, "title": "static H, W: constant sizes"},
        {
            "make": resize_dynamic,
            "dims": {"h": 5, "w": 7},
            "title": "dynamic H, W: sizes computed in the graph",
        },
    ],
    "decompose-gather-elements": [{"make": gather_elements}],
    "strip-scatter-reduction": [{"make": scatter_nd}],
    "fold-constants": [{"make": computed_scale}],
    "cleanup": [{"make": dead_branch}],
    "infer-shapes": [{"make": computed_scale, "types": True}],
    "insert-qdq": [{"make": conv_relu_pool, "options": {"ranges": {"x": 3.0}}}],
    "to-fp16": [{"make": conv_relu_pool, "options": {"keep_io_types": True}}],
}


def render(pass_name: str) -> str:
    blocks = []
    for example in EXAMPLES[pass_name]:
        kwargs = {k: v for k, v in example.items() if k != "make"}
        blocks.append("```text\n" + fragment(example["make"], pass_name, **kwargs) + "\n```")
    return "\n\n".join(blocks)


def update_page(text: str, block: str, page: Path) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{page}: no {BEGIN} ... {END} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text, count=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fill docs/passes/*.md graph fragments.")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 when a page differs"
    )
    parser.add_argument("passes", nargs="*", help="only these passes (default: all)")
    args = parser.parse_args(argv)
    stale = []
    for name in args.passes or list(EXAMPLES):
        page = PAGES / f"{name}.md"
        current = page.read_text(encoding="utf-8")
        new = update_page(current, render(name), page)
        if new == current:
            continue
        if args.check:
            stale.append(str(page))
            continue
        from onnx2trt_lib._io import write_text_atomic

        write_text_atomic(page, new)
        print(f"wrote {page}")
    if stale:
        print(
            "out of date (run python tools/gen_pass_fragments.py): " + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
