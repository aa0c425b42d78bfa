"""Where a switch model can start over: cuts before its layers, and the models that run from them.

Protection asks many questions about mixes that differ from one base mix in a single layer:
each repair step floats one more candidate, and the ranking makes one layer INT8 at a time.
Every node before the first node that reads that layer's switch computes exactly what the base
mix computes. So the base runs once, keeping the tensors that cross a few cuts, and each
question runs only the nodes after the last cut before its layer, fed those tensors. ONNX
Runtime runs the same kernels on the same values, so the outputs are the same bytes as a whole
run (tests/quant/test_switch_cuts.py), for the cost of the rest of the graph: on PP-OCRv4 rec
a layer's suffix is on average 41% of the model's time, and with six cuts a question costs
about half a whole run (benchmarks/results/quant.md, "Runs from a cut").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

# cuts per switch model, the start of the graph included: each is one more ONNX Runtime
# session (about 0.1 s on PP-OCRv4 rec), and a sixth saved little more there
MAX_CUTS = 6


@dataclass(frozen=True)
class Cut:
    """A place to start a run: the node it starts at, the tensors of the base run it reads,
    and the model outputs made before it (the base run's, unchanged by anything after)."""

    position: int
    tensors: tuple[str, ...]
    outputs_before: tuple[str, ...]


class Cuts:
    """The cuts of a switch model for its layers' switches (`flags`: layer -> bool input name),
    placed where they save most: each layer runs from the last cut at or before its first
    switched node, and a cut's cost is the `costs` (layer -> MACs; else one each) of the layers
    at or after it."""

    def __init__(
        self,
        model: onnx.ModelProto,
        flags: Mapping[str, str],
        costs: Mapping[str, float] | None = None,
        most: int | None = None,
    ) -> None:
        graph = model.graph
        self.model = model
        self.nodes = list(graph.node)
        self.flag_inputs = set(flags.values())
        self.reads = [_reads(n) for n in self.nodes]
        inputs = {i.name for i in graph.input}
        # tensors that change with the data: the rest (constants) is copied into each suffix
        self.dynamic = inputs - self.flag_inputs
        for node, read in zip(self.nodes, self.reads, strict=True):
            if read & self.dynamic:
                self.dynamic.update(node.output)
        first: dict[str, int] = {}
        for index, read in enumerate(self.reads):
            for name in read & self.flag_inputs:
                first.setdefault(name, index)
        self.start = {
            layer: first[flag] for layer, flag in flags.items() if flag in first
        }  # layer -> its first switched node
        self.outputs = [o.name for o in graph.output]
        positions = sorted(set(self.start.values()))
        self.positions = _placed(
            positions,
            [self.start[layer] for layer in self.start],
            [float((costs or {}).get(layer, 1.0)) for layer in self.start],
            MAX_CUTS if most is None else most,
        )
        self._cuts: dict[int, Cut] = {}
        # a run from each position, as a share of a whole run (by the same costs)
        total = sum(float((costs or {}).get(layer, 1.0)) for layer in self.start) or 1.0
        self._share = {
            p: sum(
                float((costs or {}).get(layer, 1.0)) for layer, s in self.start.items() if s >= p
            )
            / total
            for p in self.positions
        }

    def share(self, layer: str) -> float:
        """What a run from `layer`'s cut costs, as a share of a whole run (1.0 from the start)."""
        cut = self.cut_for(layer)
        return 1.0 if cut is None else self._share[cut.position]

    def cut_for(self, layer: str) -> Cut | None:
        """The last cut at or before `layer`'s first switched node; None: the graph's start
        (or the layer is not switched anywhere)."""
        at = self.start.get(layer)
        if at is None:
            return None
        position = max((p for p in self.positions if p <= at), default=None)
        if position is None or position == min(self.start.values()):
            return None  # nothing before it to skip
        return self.cut(position)

    def cut(self, position: int) -> Cut:
        if position not in self._cuts:
            made = {o for node in self.nodes[:position] for o in node.output}
            read_after = set().union(*self.reads[position:])
            inputs = {i.name for i in self.model.graph.input}
            # the base run's values the rest reads: made before the cut, or the data itself
            tensors = sorted(t for t in self.dynamic & read_after if t in made or t in inputs)
            before = tuple(o for o in self.outputs if o in made)
            self._cuts[position] = Cut(position, tuple(tensors), before)
        return self._cuts[position]

    def all_tensors(self) -> list[str]:
        """Every cut's tensors made by a node (the base run exposes them)."""
        graph_inputs = {i.name for i in self.model.graph.input}
        names: set[str] = set()
        for position in self.positions:
            cut = self.cut(position)
            names.update(t for t in cut.tensors if t not in graph_inputs)
            names.update(cut.outputs_before)
        return sorted(names - set(self.outputs))

    def suffix_model(self, cut: Cut, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        """The nodes from `cut` on (and the constant nodes they read), with the cut's tensors
        as inputs typed from `values` (the base run's arrays) and the outputs made after it."""
        position = cut.position
        used = set().union(*self.reads[position:])
        constants = []  # the nodes before the cut that make constants the rest reads
        for index in reversed(range(position)):
            node, read = self.nodes[index], self.reads[index]
            if any(o in used for o in node.output) and not any(
                o in self.dynamic for o in node.output
            ):
                constants.append(node)
                used |= read
        nodes = [*constants[::-1], *self.nodes[position:]]
        graph = self.model.graph
        inputs = [
            helper.make_tensor_value_info(
                name,
                helper.np_dtype_to_tensor_dtype(values[name].dtype),
                [None] * values[name].ndim,
            )
            for name in cut.tensors
        ]
        inputs += [i for i in graph.input if i.name in self.flag_inputs and i.name in used]
        suffix = onnx.ModelProto()
        suffix.CopyFrom(self.model)
        del suffix.graph.node[:]
        suffix.graph.node.extend(nodes)
        del suffix.graph.input[:]
        suffix.graph.input.extend(inputs)
        kept = [i for i in graph.initializer if i.name in used]
        del suffix.graph.initializer[:]
        suffix.graph.initializer.extend(kept)
        outputs = [o for o in graph.output if o.name not in cut.outputs_before]
        del suffix.graph.output[:]
        suffix.graph.output.extend(outputs)
        del suffix.graph.value_info[:]
        return suffix


def _reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads, those its subgraphs read from the outer scope included."""
    names = {n for n in node.input if n}
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for inner in g.node:
                names |= _reads(inner)
    return names


def _placed(
    positions: Sequence[int], starts: Sequence[int], costs: Sequence[float], most: int
) -> list[int]:
    """Up to `most` cut positions (the first of `positions` always), added one at a time where
    they lower the summed cost most; a layer starting at s runs from the last cut <= s, which
    costs the `costs` of the layers starting at or after that cut."""
    if not positions:
        return []
    at = np.asarray(positions)
    start = np.asarray(starts)
    cost = np.asarray(costs, float)
    after = np.array([cost[start >= p].sum() for p in at])  # the cost of a run from p
    # runs_from[i, j]: what layer j costs if it runs from candidate cut i (inf if i is after it)
    runs_from = np.where(at[:, None] <= start[None, :], after[:, None], np.inf)
    chosen = [0]
    current = runs_from[0].copy()
    while len(chosen) < min(most, len(at)):
        totals = np.minimum(current[None, :], runs_from).sum(axis=1)
        best = int(np.argmin(totals))
        if totals[best] >= current.sum():
            break
        chosen.append(best)
        current = np.minimum(current, runs_from[best])
    return sorted(int(at[i]) for i in chosen)
