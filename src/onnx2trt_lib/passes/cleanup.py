"""`cleanup`: remove nodes and initializers nothing reads, then sort the graph topologically."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ._infra import PassResult, result


def _graphs(graph: gs.Graph) -> list[gs.Graph]:
    """The graph and every If/Loop/Scan body in it: graph-surgeon's cleanup works on all of them."""
    return [graph, *graph.subgraphs(recursive=True)]


def _tensor_names(graphs: list[gs.Graph]) -> set[str]:
    # by name: a body also lists the outer tensors it reads
    return {name for g in graphs for name in g.tensors()}


class CleanupPass:
    name = "cleanup"
    op_types: tuple[str, ...] = ()

    def __init__(self, *, remove_unused_graph_inputs: bool | None = None) -> None:
        # Graph inputs are the model's interface: keep them unless asked.
        self.remove_unused_graph_inputs = bool(remove_unused_graph_inputs)

    def run(self, graph: gs.Graph) -> PassResult:
        graphs_before = _graphs(graph)
        nodes_before = sum(len(g.nodes) for g in graphs_before)
        tensors_before = _tensor_names(graphs_before)
        inputs_before = len(graph.inputs)
        order_before = [id(n) for n in graph.nodes]
        graph.cleanup(remove_unused_graph_inputs=self.remove_unused_graph_inputs).toposort()
        graphs_after = _graphs(graph)  # a removed If/Loop takes its bodies with it
        removed_nodes = nodes_before - sum(len(g.nodes) for g in graphs_after)
        reordered = removed_nodes == 0 and order_before != [id(n) for n in graph.nodes]
        return result(
            self.name,
            {
                "removed_nodes": removed_nodes,
                "removed_tensors": len(tensors_before - _tensor_names(graphs_after)),
                "removed_inputs": inputs_before - len(graph.inputs),
                "reordered": int(reordered),
            },
        )
