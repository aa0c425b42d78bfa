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
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ._infra import PassResult, result

_MAX_ROUNDS = 10
_SHAPE_OPS = ("Shape", "Size")
_ONNX_DOMAINS = ("", "ai.onnx", None)
# ops whose output changes from run to run; lint (compat.rules) reads this list too
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


class FoldConstantsPass:
    name = "fold-constants"
    op_types: tuple[str, ...] = ()

    def __init__(self, *, size_threshold: int | None = None, fold_shapes: bool | None = None) -> None:
        # size_threshold: largest folded tensor to keep (bytes); None = no limit.
        self.size_threshold = size_threshold
        self.fold_shapes = True if fold_shapes is None else fold_shapes

    def run(self, graph: gs.Graph) -> PassResult:
        folded = 0
        for _ in range(_MAX_ROUNDS):
            if not _may_fold(graph, self.fold_shapes):
                break
            variables = [t for t in graph.tensors().values() if isinstance(t, gs.Variable) and t.inputs]
            graph.fold_constants(
                fold_shapes=self.fold_shapes,
                error_ok=False,
                size_threshold=self.size_threshold,
                recurse_subgraphs=True,
                should_exclude_node=_never_folded,
            )
            # folding turns Variables into Constants in place (Constant nodes' outputs too)
            newly = sum(1 for t in variables if isinstance(t, gs.Constant))
            if not newly:
                break
            folded += newly
            graph.cleanup(remove_unused_graph_inputs=False)
        return result(self.name, {"folded_tensors": folded})


def _is_random(node: gs.Node) -> bool:
    return node.op in RANDOM_OPS and node.domain in _ONNX_DOMAINS


def _never_folded(node: gs.Node) -> bool:
    """Random generators, and custom-domain ops ONNX Runtime cannot evaluate (a plugin's op)."""
    return _is_random(node) or node.domain not in (*_ONNX_DOMAINS, "ai.onnx.ml")


def _may_fold(graph: gs.Graph, fold_shapes: bool) -> bool:
    """Conservative: False only when no node can possibly fold (then folding is skipped)."""
    for node in graph.nodes:
        if _never_folded(node):
            continue
        if any(isinstance(attr, gs.Graph) for attr in node.attrs.values()):
            return True  # subgraphs: let graph-surgeon decide
        if all(isinstance(t, gs.Constant) or not t.name for t in node.inputs) and node.outputs:
            return True  # Constant nodes and all-constant inputs
        if fold_shapes and node.op in _SHAPE_OPS and node.inputs:
            shape = node.inputs[0].shape
            if shape is not None and any(isinstance(d, int) for d in shape):
                return True
    return False
