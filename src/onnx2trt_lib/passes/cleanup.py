"""`cleanup`: remove nodes and initializers nothing reads, then sort the graph topologically."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ._infra import PassResult, result


class CleanupPass:
    name = "cleanup"
    op_types: tuple[str, ...] = ()

    def __init__(self, *, remove_unused_graph_inputs: bool | None = None) -> None:
        # Graph inputs are the model's interface: keep them unless asked.
        self.remove_unused_graph_inputs = bool(remove_unused_graph_inputs)

    def run(self, graph: gs.Graph) -> PassResult:
        nodes_before = len(graph.nodes)
        tensors_before = len(graph.tensors())
        inputs_before = len(graph.inputs)
        order_before = [id(n) for n in graph.nodes]
        graph.cleanup(remove_unused_graph_inputs=self.remove_unused_graph_inputs).toposort()
        removed_nodes = nodes_before - len(graph.nodes)
        reordered = removed_nodes == 0 and order_before != [id(n) for n in graph.nodes]
        return result(
            self.name,
            {
                "removed_nodes": removed_nodes,
                "removed_tensors": tensors_before - len(graph.tensors()) if removed_nodes == 0 else 0,
                "removed_inputs": inputs_before - len(graph.inputs),
                "reordered": int(reordered),
            },
        )
