"""`strip-scatter-reduction`: drop `reduction="none"` from ScatterND / ScatterElements.

torch's dynamo exporter (torch 2.13: slice assignment `x[:, a:b] = y`, torch.scatter,
select_scatter) writes the attribute explicitly with its default value "none"; the TensorRT
10.0/10.1 ONNX parsers refuse any `reduction` attribute on ScatterND although "none" means
plain assignment. Removing it changes nothing: the ONNX default is "none". Other reductions
("add", "mul", "max", "min") change the result and are left alone.
"""

from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from ._infra import PassResult, result

log = logging.getLogger(__name__)


class StripScatterReductionPass:
    """Remove the no-op `reduction="none"` attribute (also inside If/Loop/Scan bodies and local functions)."""

    name = "strip-scatter-reduction"
    op_types: tuple[str, ...] = ("ScatterND", "ScatterElements")

    def __init__(self) -> None:
        # No options: "none" is the only value that can be dropped without changing results.
        pass

    def run(self, graph: gs.Graph) -> PassResult:
        # model-local functions too: the TensorRT parser inlines them and refuses the attribute there
        stripped = self._run_graph(graph) + sum(self._run_graph(f) for f in graph.functions)
        return result(self.name, {"stripped": stripped})

    def _run_graph(self, graph: gs.Graph) -> int:
        stripped = 0
        for node in graph.nodes:
            for value in node.attrs.values():
                if isinstance(value, gs.Graph):
                    stripped += self._run_graph(value)
            if node.op not in self.op_types or node.domain not in ("", "ai.onnx", None):
                continue
            reduction = node.attrs.get("reduction")
            if isinstance(reduction, bytes):
                reduction = reduction.decode("utf-8", "replace")
            if reduction == "none":
                del node.attrs["reduction"]
                stripped += 1
                log.debug("removed reduction='none' from %s %s", node.op, node.name)
        return stripped
