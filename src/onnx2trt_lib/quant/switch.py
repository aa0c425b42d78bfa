"""One ONNX Runtime session for every mix of INT8 and float layers: Q/DQ behind per-layer switches.

Protection asks "how close to FP32 is the model with these layers in float?" dozens of times.
Writing and loading a Q/DQ model per question costs a new session each (seconds on a real
model). Instead the full Q/DQ model is built once and every quantized input of a layer is read
through `If(switch) {Q/DQ of the float input} else {the float input}`; a bool scalar graph input
per layer picks INT8 or float, so one session answers every question and a question costs one
inference (layers switched to float skip their Q/DQ work, which a `Where` would still do).

The switches reproduce what insert-qdq writes with those layers excluded, residual Adds
included: the Add's identity input is quantized while the layer feeding its other input is
INT8; when both inputs come from layers, insert-qdq quantizes input 1 if the layer on input 0
is INT8, else input 0 if the layer on input 1 is (tests/quant/test_switch.py checks the outputs
against the written models).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import RuntimeExecutionError
from ..passes.insert_qdq import activation_scale
from ..runtime.base import in_float_type
from ..runtime.ort_runner import ORT_TYPES
from .accuracy import WEIGHTED_OPS, Batch, _cat, rows_per_batch, run_pool, session
from .switch_cuts import Cut, Cuts, reads

FLAG_PREFIX = "onnx2trt_int8_switch_"
# Runs side by side, each on its share of the cores: protection's runs are small (2-8 rows), and
# two single-threaded runs on the 2-core box beat one run on both cores (no per-op hand-offs;
# under load, 36-60 ms a row of PP-OCRv4 rec against 78-113 ms). Outputs are the same bytes
# whatever the threads (checked on PP-OCRv4 rec).
PARALLEL_RUNS = 2
# run_flips runs each question from the last cut before its layer (quant.switch_cuts); off:
# whole runs (the same bytes, slower)
RUN_FROM_CUTS = True


def quantized_layers(qmodel: onnx.ModelProto) -> list[str]:
    """Names of weighted nodes whose data and weight inputs both come from DequantizeLinear."""
    producers = {out: n.op_type for n in qmodel.graph.node for out in n.output}
    return [
        n.name
        for n in qmodel.graph.node
        if n.op_type in WEIGHTED_OPS
        and n.name
        and all(producers.get(t) == "DequantizeLinear" for t in n.input[:2])
    ]


def switch_model(
    qmodel: onnx.ModelProto,
    layers: Sequence[str],
    ranges: Mapping[str, float],
    exclude_tensors: Collection[str] = (),
    biases: Mapping | None = None,
    weights: Mapping | None = None,
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """(model with a bool input per layer, layer -> its switch input name); `qmodel` is not changed.

    `biases` (layer -> quant.qdq_bias.BiasFix; `qmodel` carries the corrected ones): a layer
    switched to float reads its original bias instead (`Where(switch, corrected, original)`).
    `weights` (layer -> quant.compensate.WeightFix; `qmodel` carries the compensated ones): a
    layer switched to float reads its original weight (the If's float branch)."""
    graph = qmodel.graph
    producers = {out: n for n in graph.node for out in n.output}
    flags = {layer: f"{FLAG_PREFIX}{i}" for i, layer in enumerate(layers)}
    scale_type = next(
        (
            i.data_type
            for n in graph.node
            if n.op_type == "DequantizeLinear"
            for i in graph.initializer
            if i.name == n.input[1]
        ),
        TensorProto.FLOAT,
    )
    nodes: list[onnx.NodeProto] = []
    extra_inits: list[onnx.TensorProto] = []
    fresh = iter(range(1 << 30))

    def float_source(tensor: str) -> str | None:
        dq = producers.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producers.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None

    def layer_of(tensor: str) -> str | None:
        node = producers.get(tensor)
        return node.name if node is not None and node.name in flags else None

    made: dict[str, onnx.NodeProto] = {}  # Q/DQ nodes of the second residual case, by output

    def switched(tensor: str, src: str, cond: str, float_src: str | None = None) -> str:
        """If(cond): the Q/DQ chain that makes `tensor` from `src`, else `float_src` (default `src`
        itself; a compensated layer's float branch reads its original weight). Inside the
        branch, so a layer switched to float skips its QuantizeLinear/DequantizeLinear work (a
        Where computed both sides: the ranking runs with all but one switch off)."""
        out = f"{tensor}__switch{next(fresh)}"
        dq = made.get(tensor) or producers[tensor]
        q = made.get(dq.input[0]) or producers[dq.input[0]]
        q_out, dq_out, same = f"{out}__q", f"{out}__dq", f"{out}__float"
        then = helper.make_graph(
            [
                helper.make_node(q.op_type, [src, *q.input[1:]], [q_out], name=q_out),
                helper.make_node(dq.op_type, [q_out, *dq.input[1:]], [dq_out], name=dq_out),
            ],
            f"{out}_int8",
            [],
            [helper.make_tensor_value_info(dq_out, scale_type, None)],
        )
        for node, copy in zip((q, dq), then.node, strict=True):
            copy.attribute.extend(node.attribute)
        orig = helper.make_graph(
            [helper.make_node("Identity", [float_src or src], [same], name=same)],
            f"{out}_float",
            [],
            [helper.make_tensor_value_info(same, scale_type, None)],
        )
        nodes.append(
            helper.make_node("If", [cond], [out], name=out, then_branch=then, else_branch=orig)
        )
        return out

    def qdq(tensor: str) -> str | None:
        """Q/DQ of an activation the full model does not quantize (the second residual case)."""
        if tensor not in ranges or tensor in exclude_tensors:
            return None
        k = next(fresh)
        scale = numpy_helper.from_array(
            activation_scale(ranges[tensor]).astype(helper.tensor_dtype_to_np_dtype(scale_type)),
            f"{tensor}__sw_scale{k}",
        )
        zero = numpy_helper.from_array(np.zeros((), np.int8), f"{tensor}__sw_zp{k}")
        extra_inits.extend([scale, zero])
        q, dq = f"{tensor}__sw_q{k}", f"{tensor}__sw_dq{k}"
        made[q] = helper.make_node("QuantizeLinear", [tensor, scale.name, zero.name], [q])
        made[dq] = helper.make_node("DequantizeLinear", [q, scale.name, zero.name], [dq])
        return dq

    def both(a: str, b: str) -> str:
        out = f"switch_and{next(fresh)}"
        nodes.append(helper.make_node("And", [a, b], [out]))
        return out

    def negate(a: str) -> str:
        out = f"switch_not{next(fresh)}"
        nodes.append(helper.make_node("Not", [a], [out]))
        return out

    bias_at: dict[str, list] = {}
    for fix in (biases or {}).values():
        if fix.layer in flags:
            bias_at.setdefault(fix.node, []).append(fix)

    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for fix in bias_at.get(node.name, ()):
            k = next(fresh)
            orig = numpy_helper.from_array(fix.original, f"{fix.tensor}__sw_float{k}")
            extra_inits.append(orig)
            out = f"{fix.tensor}__sw_bias{k}"
            nodes.append(
                helper.make_node(
                    "Where", [flags[fix.layer], node.input[fix.slot], orig.name], [out]
                )
            )
            new.input[fix.slot] = out
        if node.name in flags:
            for slot in (0, 1):
                src = float_source(node.input[slot])
                if src is not None:
                    original = None
                    fix = (weights or {}).get(node.name)
                    if slot == 1 and fix is not None and fix.tensor == src:
                        init = numpy_helper.from_array(
                            fix.original, f"{src}__sw_float{next(fresh)}"
                        )
                        extra_inits.append(init)
                        original = init.name
                    new.input[slot] = switched(node.input[slot], src, flags[node.name], original)
        elif node.op_type == "Add" and len(node.input) == 2:
            srcs = [float_source(t) for t in node.input]
            if srcs[1] is not None and srcs[0] is None:
                a, b = layer_of(node.input[0]), layer_of(srcs[1])
                if a is not None:  # input 1 quantized because the layer on input 0 is INT8
                    new.input[1] = switched(node.input[1], srcs[1], flags[a])
                    dq0 = qdq(node.input[0]) if b is not None else None
                    if (
                        dq0 is not None and b is not None
                    ):  # layer 0 float, layer 1 INT8: insert-qdq takes input 0
                        cond = both(negate(flags[a]), flags[b])
                        new.input[0] = switched(dq0, node.input[0], cond)
            elif srcs[0] is not None and srcs[1] is None:
                b = layer_of(node.input[1])
                if b is not None:
                    new.input[0] = switched(node.input[0], srcs[0], flags[b])
        nodes.append(new)
    model = onnx.ModelProto()
    model.CopyFrom(qmodel)
    del model.graph.node[:]
    model.graph.node.extend(_live(nodes, [o.name for o in graph.output]))
    model.graph.initializer.extend(extra_inits)
    for name in flags.values():
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.BOOL, []))
    return model, flags


def _live(nodes: Sequence[onnx.NodeProto], outputs: Sequence[str]) -> list[onnx.NodeProto]:
    """`nodes` without those whose outputs nothing reads (the Q/DQ pairs that moved into the
    switches' branches): a session would otherwise still compute them on every run."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if not any(o in needed for o in node.output):
            continue
        kept.append(node)
        needed.update(reads(node))  # its branches' outer-scope reads too
    return kept[::-1]


class SwitchSession:
    """The switch model of `qmodel` in one ONNX Runtime session; `run(int8_layers, batches)`."""

    def __init__(
        self,
        qmodel: onnx.ModelProto,
        layers: Sequence[str],
        ranges: Mapping[str, float],
        exclude_tensors: Collection[str] = (),
        biases: Mapping | None = None,
        weights: Mapping | None = None,
        costs: Mapping[str, float] | None = None,
    ) -> None:
        """`costs` (layer -> MACs): where run_flips places its cuts (else one per layer)."""
        from ..calib._threads import ort_threads

        model, self.flags = switch_model(qmodel, layers, ranges, exclude_tensors, biases, weights)
        self.layers = list(layers)
        cores = ort_threads()
        self.workers = max(1, min(PARALLEL_RUNS, cores))  # runs at a time
        self.threads = max(1, cores // self.workers)
        self.cuts = Cuts(model, self.flags, costs) if RUN_FROM_CUTS else None
        self.kept = self.cuts.all_tensors() if self.cuts is not None else []
        exposed = onnx.ModelProto()
        exposed.CopyFrom(model)  # the cut tensors as outputs too (ONNX Runtime infers their types)
        exposed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in self.kept)
        self.session = session(exposed, threads=self.threads)
        self.outputs = [o.name for o in qmodel.graph.output]
        self.types = {i.name: ORT_TYPES.get(i.type) for i in self.session.get_inputs()}
        self.runs = 0
        self.dynamic = rows_per_batch(qmodel, batch_size=0) == 0  # rows may be split
        self._suffixes: dict[int, tuple] = {}  # cut position -> (session, its input names)

    def run_batch(
        self, int8_layers: Collection[str], feed: Batch, start: Start | None = None
    ) -> dict[str, np.ndarray]:
        """The outputs of the mix of INT8 layers on `feed`. `start` (run_flips; on this feed):
        the mix is start's base, whose run keeps the cut tensors in it, or differs from the
        base in one layer, which runs from that layer's cut on them."""
        on = frozenset(int8_layers)
        if start is None or self.cuts is None:
            return self._run(on, feed, self.outputs)
        if on == start.base:
            values = {**self._data(feed), **self._run(on, feed, [*self.outputs, *self.kept])}
            start.values.update(values)  # only once the run went through
            return {n: values[n] for n in self.outputs}
        differ = on ^ start.base
        if len(differ) != 1:
            raise ValueError(
                f"run_batch(start=...): the mix differs from the base in {len(differ)} layers "
                f"({', '.join(sorted(differ)[:5])}), not one"
            )
        (layer,) = differ
        cut = self.cuts.cut_for(layer)
        if cut is None:
            return self._run(on, feed, self.outputs)
        made, inputs = self._suffixes[cut.position]
        given = {**start.values, **{f: np.array(name in on) for name, f in self.flags.items()}}
        names = [n for n in self.outputs if n not in cut.outputs_before]
        out = dict(zip(names, _ort_run(made, names, {k: given[k] for k in inputs}), strict=True))
        return {n: out[n] if n in out else start.values[n] for n in self.outputs}

    def _run(
        self, int8_layers: Collection[str], feed: Batch, names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        on = set(int8_layers)
        flags = {f: np.array(layer in on) for layer, f in self.flags.items()}
        feeds = {**self._data(feed), **flags}
        return dict(zip(names, _ort_run(self.session, names, feeds), strict=True))

    def _data(self, feed: Batch) -> dict[str, np.ndarray]:
        """The feed's arrays the session takes, in the float type it declares."""
        return {k: in_float_type(v, self.types[k]) for k, v in feed.items() if k in self.types}

    def run_each(
        self, mixes: Sequence[Collection[str]], feeds: Sequence[Batch]
    ) -> list[list[dict[str, np.ndarray]]]:
        """Per mix of INT8 layers, its outputs on each feed: `workers` runs at a time."""
        tasks = [(mix, feed) for mix in mixes for feed in feeds]
        self.runs += len(tasks)
        done = self._side_by_side(lambda t: self.run_batch(*t), tasks)
        return [done[i : i + len(feeds)] for i in range(0, len(done), len(feeds))]

    def run_batches(
        self, int8_layers: Collection[str], feeds: Sequence[Batch]
    ) -> list[dict[str, np.ndarray]]:
        """Each feed's outputs, `workers` runs at a time."""
        return self.run_each([int8_layers], feeds)[0]

    def run(self, int8_layers: Collection[str], batches: Sequence[Batch]) -> dict[str, np.ndarray]:
        """Outputs by name, the batches joined along axis 0 (fewer batches than workers: split
        along their rows where the batch is dynamic, so every worker has a part)."""
        parts = self.run_batches(int8_layers, self.parts_of(batches))
        return {n: _cat([p[n] for p in parts]) for n in self.outputs}

    def parts_of(self, batches: Sequence[Batch]) -> list[Batch]:
        """The runs `run` makes of `batches`: fewer batches than workers are split along their
        rows where the batch is dynamic (a caller that runs them itself gets the same bytes)."""
        if self.dynamic and len(batches) < self.workers:
            return [part for feed in batches for part in _split_rows(feed, self.workers)]
        return list(batches)

    def start(self, base: Collection[str], feed: Batch) -> Start:
        """Questions about mixes that differ from the `base` mix of INT8 layers in one layer,
        on `feed` (run_flips). The base runs once, on the first question that saves by it."""
        return Start(frozenset(base), feed)

    def run_flips(self, start: Start, flips: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Per layer of `flips`, the outputs of start's mix with that layer switched the other
        way (INT8 <-> float) on start's feed, `workers` runs at a time: each runs from the last
        cut before the layer, fed the base run's tensors there (the same bytes as a whole run).
        Whole runs where that saves less than the base run costs (a few layers near the start)."""
        mixes = [start.base ^ {layer} for layer in flips]
        cuts = self.cuts
        if cuts is None or (
            not start.values and sum(1.0 - cuts.share(layer) for layer in flips) <= 1.0
        ):
            return [out for (out,) in self.run_each(mixes, [start.feed])]
        if not start.values:
            self.runs += 1
            self.run_batch(start.base, start.feed, start)
        # each cut's session, made before the runs side by side, `workers` at a time (ONNX
        # Runtime builds a session without the GIL: five on PP-OCRv4 rec 0.34-0.40 -> 0.19-0.23 s)
        missing = {c.position: c for c in map(cuts.cut_for, flips) if c is not None}
        missing = {p: c for p, c in missing.items() if p not in self._suffixes}

        def made(cut: Cut) -> tuple:
            built = session(cuts.suffix_model(cut, start.values), threads=self.threads)
            return built, [i.name for i in built.get_inputs()]

        sessions = self._side_by_side(made, list(missing.values()))
        self._suffixes.update(zip(missing, sessions, strict=True))
        self.runs += len(flips)
        return self._side_by_side(lambda m: self.run_batch(m, start.feed, start), mixes)

    def _side_by_side(self, work: Callable, items: Sequence) -> list:
        """[work(item) for item in items], `workers` at a time."""
        if self.workers == 1 or len(items) < 2:
            return [work(item) for item in items]
        return list(run_pool(self.workers).map(work, items))


@dataclass(eq=False)
class Start:
    """A base mix on one feed, and once run its data, outputs and cut tensors by name."""

    base: frozenset[str]
    feed: Batch
    values: dict[str, np.ndarray] = field(default_factory=dict)


def _ort_run(session_, names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list:
    try:
        return session_.run(list(names), feeds)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeExecutionError(f"ONNX Runtime failed: {first}") from None


def _split_rows(feed: Batch, parts: int) -> list[Batch]:
    """`feed` in up to `parts` pieces along axis 0 (as it is when its arrays differ in rows)."""
    rows = {len(v) for v in feed.values() if np.ndim(v)}
    if len(rows) != 1:
        return [feed]
    n = rows.pop()
    step = -(-n // parts)
    if n < 2:
        return [feed]
    return [
        {k: v[i : i + step] if np.ndim(v) else v for k, v in feed.items()}
        for i in range(0, n, step)
    ]
