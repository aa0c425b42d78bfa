"""`fold-constants`: evaluate every subgraph whose inputs are all constant (what onnxsim is used for).

Uses onnx-graphsurgeon's folding (ONNX Runtime evaluates the constant subgraphs; shape
arithmetic on static dims is folded too), repeated until nothing more folds. Errors are
raised, not swallowed: a model that cannot be folded is reported with the reason.

graph-surgeon's folding copies the whole graph, so a cheap scan first checks whether any
node could fold at all; on an already folded model (a second `fix`) nothing is copied.

Random generators are never folded, nor anything computed from them: their inputs are
constant but their output is new on every run (with a `seed` too: ONNX Runtime seeds the
generator once per session, and each run draws on). Nor are ops of custom domains (plugins):
ONNX Runtime cannot evaluate them, and they are TensorRT's to run.

graph-surgeon's folding also runs a "shape cast elision": `Cast(int -> float) -> op(float
constant) -> Cast(-> int)` becomes `op(int constant)`, the constant cast to int in place. That
is exact only for integral constants that nothing else reads, and for arithmetic ops (torch's
dynamo exporter writes `Cast(size) * 1.5 -> Cast` for `F.interpolate(scale_factor=1.5)`, which
it would turn into `size * 1`). Where it is not exact, an Identity is put between the op and its
Casts for the time of the folding, so the pattern does not match; the elisions that do happen
are counted (`elided_casts`).

If/Loop/Scan bodies are folded one by one here, not by graph-surgeon's recursion, which does not
hand the exclusions above down to them; folds inside bodies and Ifs with a constant condition
replaced by their branch (`flattened_ifs`) count as changes.
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ._infra import PassResult, SkippedNode, result
from ._names import FreshNames

_MAX_ROUNDS = 10
# ops that make or read sequence/optional values; graph-surgeon's folding handles tensors only
_SEQUENCE_OPS = frozenset(
    {
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceInsert",
        "SequenceErase",
        "SequenceAt",
        "SequenceLength",
        "SequenceMap",
        "SplitToSequence",
        "ConcatFromSequence",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
    }
)
_SHAPE_OPS = ("Shape", "Size")
_ONNX_DOMAINS = ("", "ai.onnx", None)
# ops whose output changes from run to run; lint (compat.rules) reads this list too
RANDOM_OPS = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)


class FoldConstantsPass:
    name = "fold-constants"
    op_types: tuple[str, ...] = ()

    def __init__(
        self, *, size_threshold: int | None = None, fold_shapes: bool | None = None
    ) -> None:
        # size_threshold: largest folded tensor to keep (bytes); None = no limit.
        self.size_threshold = size_threshold
        self.fold_shapes = True if fold_shapes is None else fold_shapes

    def run(self, graph: gs.Graph) -> PassResult:
        from .._optional import available, onnxruntime

        if available("onnxruntime"):
            onnxruntime()  # its log lines off stderr: graph-surgeon's sessions use the default logger
        folded = elided = flattened = 0
        optional = _optional_value(graph)
        if optional is not None:
            reason = "optional-typed values: graph-surgeon cannot write the model back; not folded"
            return result(self.name, {}, (SkippedNode(optional.name, "", reason),))
        fresh = FreshNames(graph)
        skipped: dict[int, SkippedNode] = {}
        for _ in range(_MAX_ROUNDS):
            newly_flattened = _flatten_constant_ifs(graph, fresh)
            flattened += newly_flattened
            if newly_flattened:
                graph.cleanup(remove_unused_graph_inputs=False)
            if not _may_fold(graph, self.fold_shapes):
                if not newly_flattened:
                    break
                continue
            # a body's tensors() lists the outer tensors it reads too: count each tensor once
            variables = list(
                {
                    id(t): t
                    for g in _graphs(graph)
                    for t in g.tensors().values()
                    if isinstance(t, gs.Variable) and t.inputs
                }.values()
            )
            # folding never changes a node's inputs; graph-surgeon's cast elision does
            inputs_before = {
                id(n): (n, [id(t) for t in n.inputs]) for g in _graphs(graph) for n in g.nodes
            }
            skipped.update(_report_never_folded(graph))
            guards = _guard_inexact_cast_elisions(graph, fresh) if self.fold_shapes else []
            shape_slices = _split_shape_slices(graph, fresh) if self.fold_shapes else []
            try:
                # bodies one by one, parents first (as graph-surgeon recurses), but with our exclusions:
                # graph-surgeon does not hand should_exclude_node down to If/Loop/Scan bodies
                pending = [graph]
                while pending:
                    g = pending.pop(0)
                    g.fold_constants(
                        fold_shapes=self.fold_shapes,
                        error_ok=False,
                        size_threshold=self.size_threshold,
                        recurse_subgraphs=False,
                        recurse_functions=g is graph,
                        flatten_subgraphs=False,  # _flatten_constant_ifs: graph-surgeon's drops outputs
                        should_exclude_node=_never_folded,
                    )
                    pending.extend(g.subgraphs())
            finally:
                _join_shape_slices(graph, shape_slices)
                _remove_guards(graph, guards)
            # folding turns Variables into Constants in place (Constant nodes' outputs too)
            newly = sum(1 for t in variables if isinstance(t, gs.Constant))
            elided += sum(
                1 for n, ids in inputs_before.values() if [id(t) for t in n.inputs] != ids
            )
            if not newly and not newly_flattened:
                break
            folded += newly
            graph.cleanup(remove_unused_graph_inputs=False)
        return result(
            self.name,
            {"folded_tensors": folded, "elided_casts": elided, "flattened_ifs": flattened},
            tuple(skipped.values()),
        )


def _is_random(node: gs.Node) -> bool:
    return node.op in RANDOM_OPS and node.domain in _ONNX_DOMAINS


# No node whose output would be larger is evaluated, even when only a small tensor after it is
# kept: a 198-byte model's ConstantOfShape(100000x100000) made ONNX Runtime allocate 40 GB.
MAX_FOLD_BYTES = 256 * 2**20


def _output_bytes(node: gs.Node) -> int:
    """The largest output of `node` in bytes, as far as shapes (or a constant shape input) tell."""
    largest = 0
    for index, out in enumerate(node.outputs):
        shape = out.shape
        if node.op in ("ConstantOfShape", "Expand") and index == 0:
            source = node.inputs[0] if node.op == "ConstantOfShape" else node.inputs[-1]
            if isinstance(source, gs.Constant):
                shape = [int(d) for d in np.asarray(source.values).reshape(-1)]
        if shape is None or any(not isinstance(d, (int, np.integer)) for d in shape):
            continue
        count = 1
        for dim in shape:
            count *= max(int(dim), 1)
        itemsize = np.dtype(out.dtype).itemsize if out.dtype is not None else 4
        largest = max(largest, count * itemsize)
    return largest


def _never_folded(node: gs.Node) -> bool:
    """Random generators, custom-domain ops ONNX Runtime cannot evaluate (a plugin's op), sequence
    and optional values (graph-surgeon stores only tensors), nodes whose output is over
    MAX_FOLD_BYTES, and If/Loop/Scan nodes whose bodies hold any of them."""
    return _why_never_folded(node) is not None


def _why_never_folded(node: gs.Node) -> str | None:
    if _is_random(node):
        return "random op: a new value on every run"
    if node.domain not in (*_ONNX_DOMAINS, "ai.onnx.ml"):
        return f"custom domain {node.domain!r}: ONNX Runtime cannot evaluate it"
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        if _output_bytes(node) > MAX_FOLD_BYTES:
            return f"output over {MAX_FOLD_BYTES} bytes: never evaluated (memory)"
    if node.op in _SEQUENCE_OPS or any(
        isinstance(t, gs.Variable) and t.type not in ("tensor_type", None) for t in node.outputs
    ):
        return "sequence/optional value: graph-surgeon folds tensors only"
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            for inner in value.nodes:
                if (why := _why_never_folded(inner)) is not None:
                    return f"its body holds {inner.op}: {why}"
    return None


def _optional_value(graph: gs.Graph) -> gs.Tensor | None:
    """A tensor of optional type anywhere in the model (graph-surgeon's export fails on them)."""
    for g in _graphs(graph):
        for t in g.tensors().values():
            if isinstance(t, gs.Variable) and t.type == "optional_type":
                return t
    return None


def _report_never_folded(graph: gs.Graph) -> dict[int, SkippedNode]:
    """Nodes that would fold (all inputs constant) but are left alone, and why."""
    skipped = {}
    for g in _graphs(graph):
        for node in g.nodes:
            if node.op == "Constant" or not all(
                isinstance(t, gs.Constant) or not t.name for t in node.inputs
            ):
                continue
            if node.op in RANDOM_OPS:
                continue  # never a fold: a random op is meant to stay
            why = _why_never_folded(node)
            if why is not None and node.domain in (*_ONNX_DOMAINS, "ai.onnx.ml"):
                skipped[id(node)] = SkippedNode(node.name, node.op, f"not folded: {why}")
    return skipped


def _may_fold(graph: gs.Graph, fold_shapes: bool) -> bool:
    """Conservative: False only when no node can possibly fold (then folding is skipped)."""
    for node in graph.nodes:
        if any(isinstance(attr, gs.Graph) for attr in node.attrs.values()):
            return True  # subgraphs: let graph-surgeon decide
        if _never_folded(node):
            continue
        if all(isinstance(t, gs.Constant) or not t.name for t in node.inputs) and node.outputs:
            return True  # Constant nodes and all-constant inputs
        if fold_shapes and node.op in _SHAPE_OPS and node.inputs:
            shape = node.inputs[0].shape
            if shape is not None and any(isinstance(d, int) for d in shape):
                return True
    return False


def _graphs(graph: gs.Graph) -> list[gs.Graph]:
    return [graph, *graph.subgraphs(recursive=True)]


# graph-surgeon's cast elision: ops it considers, and those for which it is exact on integers
_ELISION_OPS = frozenset(
    {"Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Greater", "Less", "Concat"}
)
_EXACT_ELISION_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Concat"})


def _is_float_cast(node: gs.Node) -> bool:
    return node.op == "Cast" and node.attrs.get("to") == onnx.TensorProto.FLOAT


def _elision_is_exact(node: gs.Node) -> bool:
    """Whether computing `node` on the integers before the float Casts gives what the Casts back give."""
    if node.op not in _EXACT_ELISION_OPS:
        return False  # comparisons: the bool output would be relabelled int
    for t in node.inputs:
        if isinstance(t, gs.Constant):
            values = np.asarray(t.values)
            if len(t.outputs) > 1 or not np.issubdtype(values.dtype, np.floating):
                return False  # cast in place: every other reader would get ints too
            if values.size and not (
                np.all(np.isfinite(values))
                and np.all(values == np.round(values))
                and np.max(np.abs(values)) < 2**31
            ):
                return False
        elif not (len(t.inputs) == 1 and _is_float_cast(t.inputs[0])):
            return False  # a float input that is not a Cast of an int would be mixed with ints
    return True


def _guard_inexact_cast_elisions(graph: gs.Graph, fresh: FreshNames) -> list[gs.Node]:
    """Put an Identity between each op graph-surgeon's cast elision could rewrite inexactly and its Casts."""
    guards = []
    for g in _graphs(graph):
        outputs = {id(t) for t in g.outputs}
        added: dict[int, list[gs.Node]] = {}
        for node in g.nodes:
            if node.op not in _ELISION_OPS or node.domain not in _ONNX_DOMAINS:
                continue
            if not any(len(t.inputs) == 1 and _is_float_cast(t.inputs[0]) for t in node.inputs):
                continue
            consumed_by_casts = all(c.op == "Cast" for t in node.outputs for c in t.outputs)
            if (
                not consumed_by_casts
                or any(id(t) in outputs for t in node.outputs)
                or _elision_is_exact(node)
            ):
                continue
            for i, out in enumerate(list(node.outputs)):
                inner = gs.Variable(
                    fresh(f"{out.name}_fold_guard"), dtype=out.dtype, shape=out.shape
                )
                node.outputs[i] = inner
                guard = gs.Node(
                    "Identity", fresh(f"{out.name}_fold_guard"), inputs=[inner], outputs=[out]
                )
                added.setdefault(id(node), []).append(guard)
                guards.append(guard)
        if added:  # right after their op: folding wants a sorted graph
            g.nodes = [m for n in g.nodes for m in (n, *added.get(id(n), ()))]
    return guards


def _remove_guards(graph: gs.Graph, guards: list[gs.Node]) -> None:
    """Undo _guard_inexact_cast_elisions: the op writes its output again (unless folding made it a constant)."""
    for guard in guards:
        inner = guard.inputs[0] if guard.inputs else None
        out = guard.outputs[0] if guard.outputs else None
        guard.inputs.clear()
        guard.outputs.clear()
        if inner is None or out is None:
            continue  # `out` was folded into a constant: nothing reads the op's output any more
        if inner.inputs:
            producer = inner.inputs[0]
            producer.outputs[producer.outputs.index(inner)] = out
        elif isinstance(inner, gs.Constant):
            out.to_constant(inner.values)
    removed = {id(guard) for guard in guards}
    for g in _graphs(
        graph
    ):  # a flattened If moved its branch's nodes (and guards) to the outer graph
        if any(id(n) in removed for n in g.nodes):
            g.nodes = [n for n in g.nodes if id(n) not in removed]


def _split_shape_slices(graph: gs.Graph, fresh: FreshNames) -> list[tuple]:
    """Write each `Shape(x, start, end)` of a non-constant x as `Shape(x) -> Slice` while folding.

    graph-surgeon's shape folding reads `x.shape` and ignores `start`/`end` (opset 15+): it folds
    `Shape(x, start=1)` of a 3x4x5 x to [3, 4, 5], and a Gather/Slice of it by the wrong dims. Its
    `Shape -> Slice` rule is exact, and ONNX's Slice clamps negative and out-of-range bounds as
    Shape does. `_join_shape_slices` puts back every Shape whose slice did not fold.
    """
    split = []
    for g in _graphs(graph):
        added: dict[int, gs.Node] = {}
        for node in g.nodes:
            if node.op != "Shape" or node.domain not in _ONNX_DOMAINS or not node.inputs:
                continue
            if isinstance(node.inputs[0], gs.Constant) or len(node.outputs) != 1:
                continue  # ONNX Runtime evaluates it, start/end included
            attrs = {k: node.attrs[k] for k in ("start", "end") if k in node.attrs}
            if not attrs or attrs == {"start": 0}:
                continue
            out = node.outputs[0]
            inner = gs.Variable(fresh(f"{out.name}_full_shape"), dtype=np.int64, shape=None)
            bounds = [
                gs.Constant(fresh(f"{out.name}_{what}"), np.array([value], dtype=np.int64))
                for what, value in (
                    ("start", int(attrs.get("start", 0))),
                    ("end", int(attrs.get("end", np.iinfo(np.int64).max))),
                    ("axis", 0),
                )
            ]
            for k in attrs:
                del node.attrs[k]
            node.outputs[0] = inner
            slice_node = gs.Node(
                "Slice",
                fresh(f"{node.name or out.name}_slice"),
                inputs=[inner, *bounds],
                outputs=[out],
            )
            added[id(node)] = slice_node
            split.append((node, slice_node, attrs))
        if added:  # right after their Shape: folding wants a sorted graph
            g.nodes = [
                m for n in g.nodes for m in (n, *((added[id(n)],) if id(n) in added else ()))
            ]
    return split


def _join_shape_slices(graph: gs.Graph, split: list[tuple]) -> None:
    """Undo _split_shape_slices: a Shape whose slice did not fold gets its output and attributes back."""
    removed = set()
    for shape_node, slice_node, attrs in split:
        inner = slice_node.inputs[0] if slice_node.inputs else None
        out = slice_node.outputs[0] if slice_node.outputs else None
        slice_node.inputs.clear()
        slice_node.outputs.clear()
        removed.add(id(slice_node))
        if out is None:  # folded: the slice's output is a constant now
            shape_node.inputs.clear()
            shape_node.outputs.clear()
            removed.add(id(shape_node))
            continue
        if isinstance(inner, gs.Constant):  # the full shape folded, its slice did not
            rank = len(inner.values)
            start, end = attrs.get("start", 0), attrs.get("end", rank)
            out.to_constant(np.asarray(inner.values, dtype=np.int64)[start:end])
            removed.add(id(shape_node))
            continue
        shape_node.attrs.update(attrs)
        shape_node.outputs[0] = out
    for g in _graphs(graph):  # a flattened If moved its branch's nodes to the outer graph
        if any(id(n) in removed for n in g.nodes):
            g.nodes = [n for n in g.nodes if id(n) not in removed]


def _flatten_constant_ifs(graph: gs.Graph, fresh: FreshNames) -> int:
    """Replace each If whose condition is a constant by the nodes of the branch it takes.

    Done here, not by graph-surgeon: its flattening iterates over the If's outputs while
    unhooking them, so an If with two or more outputs loses every second one. Branch outputs that
    no branch node produces (an outer tensor, a constant) are passed on by an Identity.
    """
    count = 0
    for g in _graphs(graph):
        index = 0
        while index < len(g.nodes):
            node = g.nodes[index]
            cond = node.inputs[0] if node.op == "If" and node.inputs else None
            if not isinstance(cond, gs.Constant) or np.asarray(cond.values).size != 1:
                index += 1
                continue
            branch = node.attrs[
                "then_branch" if bool(np.asarray(cond.values).reshape(-1)[0]) else "else_branch"
            ]
            local = branch._local_tensors()
            for tensor in local.values():
                tensor.name = fresh(f"{tensor.name}_{branch.name or 'branch'}")
            for inner in branch.nodes:
                if inner.name:
                    inner.name = fresh(inner.name)
            nodes, branch_outputs = list(branch.nodes), list(branch.outputs)
            branch.nodes, branch.outputs = [], []  # moved out: not to be flattened twice
            own = {id(n) for n in nodes}
            outer_outputs = list(node.outputs)
            node.inputs.clear()
            node.outputs.clear()
            moved: dict[int, gs.Tensor] = {}  # branch tensor -> the If output that took its place
            for out, branch_out in zip(outer_outputs, branch_outputs, strict=True):
                producer = branch_out.inputs[0] if branch_out.inputs else None
                if producer is not None and id(producer) in own:
                    for reader in list(branch_out.outputs):  # the branch's own readers follow
                        for k, t in enumerate(reader.inputs):
                            if t is branch_out:
                                reader.inputs[k] = out
                    producer.outputs[producer.outputs.index(branch_out)] = out
                    moved[id(branch_out)] = out
                    continue
                # an outer tensor, a constant, or a tensor the branch returns twice
                source = moved.get(id(branch_out), branch_out)
                nodes.append(
                    gs.Node("Identity", fresh(f"{out.name}_branch"), inputs=[source], outputs=[out])
                )
            g.nodes[index : index + 1] = nodes
            index += len(nodes)
            count += 1
    return count
