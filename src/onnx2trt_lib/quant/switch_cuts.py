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
        # the graph without its weights: each suffix takes the ones it reads
        self.template = onnx.ModelProto()
        self.template.CopyFrom(model)
        del self.template.graph.initializer[:]
        self.initializers = list(graph.initializer)
        self.nodes = list(graph.node)
        self.flag_inputs = set(flags.values())
        self.reads = [reads(n) for n in self.nodes]
        # the data (below IR 4 the initializers are listed as graph inputs too)
        inputs = {i.name for i in graph.input}
        self.data = inputs - {t.name for t in graph.initializer} - self.flag_inputs
        # tensors that change with the data: the rest (constants) is copied into each suffix
        self.dynamic = set(self.data)
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
        cost = {layer: float((costs or {}).get(layer, 1.0)) for layer in self.start}
        self.positions = _placed(
            sorted(set(self.start.values())),
            list(self.start.values()),
            list(cost.values()),
            MAX_CUTS if most is None else most,
        )
        self._cuts: dict[int, Cut] = {}
        # a run from each position, as a share of a whole run (by the same costs)
        total = sum(cost.values()) or 1.0
        starts, costs_ = np.asarray(list(self.start.values())), np.asarray(list(cost.values()))
        self._share = {p: _run_cost(starts, costs_, p) / total for p in self.positions}

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
        if position is None or position == self.positions[0]:
            return None  # nothing before it to skip
        return self.cut(position)

    def cut(self, position: int) -> Cut:
        """The cut before node `position` (kept once made)."""
        if position not in self._cuts:
            made_after = {o for node in self.nodes[position:] for o in node.output}
            read_after = set().union(*self.reads[position:])
            # the base run's values the rest reads: made before the cut, or the data itself
            tensors = sorted(t for t in self.dynamic & read_after if t not in made_after)
            # outputs the rest does not make (made before it, the data, a constant): the base's
            before = tuple(o for o in self.outputs if o not in made_after)
            self._cuts[position] = Cut(position, tuple(tensors), before)
        return self._cuts[position]

    def all_tensors(self) -> list[str]:
        """Every cut's tensors made by a node (the base run exposes them)."""
        names: set[str] = set()
        for position in self.positions[1:]:
            cut = self.cut(position)
            names.update(t for t in cut.tensors if t not in self.data)
        return sorted(names - set(self.outputs))

    def suffix_model(self, cut: Cut, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        """The nodes from `cut` on (and the constant nodes they read), with the cut's tensors
        as inputs typed from `values` (the base run's arrays) and the outputs made after it.
        The tensors the base run exposes are outputs here too, where made here: ONNX Runtime
        does not fuse across a graph output, so both sessions fuse the same nodes."""
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
        graph = self.template.graph
        inputs = [
            helper.make_tensor_value_info(
                name,
                helper.np_dtype_to_tensor_dtype(values[name].dtype),
                [None] * values[name].ndim,
            )
            for name in cut.tensors
        ]
        data = set(cut.tensors) | self.data
        # the flags it reads, and below IR 4 the initializers it reads (listed as inputs there)
        inputs += [i for i in graph.input if i.name in used and i.name not in data]
        made = {o for node in nodes for o in node.output}
        outputs = [o for o in graph.output if o.name not in cut.outputs_before]
        outputs += [onnx.ValueInfoProto(name=n) for n in self.all_tensors() if n in made]
        suffix = onnx.ModelProto()
        suffix.CopyFrom(self.template)
        suffix.graph.ClearField("node")
        suffix.graph.node.extend(nodes)
        suffix.graph.ClearField("input")
        suffix.graph.input.extend(inputs)
        suffix.graph.initializer.extend(i for i in self.initializers if i.name in used)
        suffix.graph.ClearField("output")
        suffix.graph.output.extend(outputs)
        suffix.graph.ClearField("value_info")
        return suffix


def reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads, those its subgraphs read from the outer scope included."""
    names = {n for n in node.input if n}
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for inner in g.node:
                names |= reads(inner)
    return names


def _run_cost(starts: np.ndarray, costs: np.ndarray, position: int) -> float:
    """What a run from `position` costs: the costs of the layers starting at or after it."""
    return float(costs[starts >= position].sum())


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
    after = np.array([_run_cost(start, cost, p) for p in at])
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
