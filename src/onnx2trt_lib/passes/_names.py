"""Fresh names for the tensors and nodes a pass adds: unique in the whole model, not one graph.

An If/Loop/Scan body sees the tensors of the graphs around it, and the ONNX checker and ONNX
Runtime want every tensor produced once across all of them (SSA over the whole model). A name
that is new to one graph can still be taken in another: two rewrites, one in the main graph and
one in a branch, must not both call their new tensor `resize_shape`.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs


class FreshNames:
    """`fresh(stem)` returns stem, else stem_1, stem_2, ...: the first name no graph of the model uses.

    Give it the main graph. The names in use are collected on the first call, so a pass that
    adds nothing pays nothing; every name handed out is taken from then on.
    """

    def __init__(self, graph: gs.Graph) -> None:
        self._graph = graph
        self._taken: set[str] | None = None

    def __call__(self, stem: str) -> str:
        if self._taken is None:
            self._taken = set()
            for g in (self._graph, *self._graph.subgraphs(recursive=True)):
                self._taken.update(g.tensors().keys())
                self._taken.update(n.name for n in g.nodes)
        name, i = stem, 0
        while name in self._taken:
            i += 1
            name = f"{stem}_{i}"
        self._taken.add(name)
        return name
