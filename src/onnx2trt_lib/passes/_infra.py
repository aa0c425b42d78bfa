"""The pass protocol and the PassManager that runs pipelines of passes.

A pass is a plain class with a stable `name`, the `op_types` it looks at, keyword-only
options, and `run(graph) -> PassResult`. It mutates the onnx-graphsurgeon graph in place
and reports exactly whether it changed anything: a second run on its own output must say
`modified=False`. Passes keep no state between runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import onnx
import onnx_graphsurgeon as gs

from .._weights import tensor_bytes
from ..errors import PassError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedNode:
    """A node a pass matched but left alone, and why (data, not an exception)."""

    node: str
    op: str
    reason: str


@dataclass(frozen=True)
class PassResult:
    """What one run of a pass did. `counts` maps what changed (e.g. "rewritten") to how many."""

    name: str
    modified: bool
    counts: Mapping[str, int] = field(default_factory=dict)
    skipped: tuple[SkippedNode, ...] = ()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "modified": self.modified,
            "counts": dict(self.counts),
            "skipped": [s.__dict__ for s in self.skipped],
        }


@runtime_checkable
class Pass(Protocol):
    # class attributes of every pass (not ClassVar here: mypy cannot match a class object,
    # type[Pass], against ClassVar protocol members, and the registry holds classes)
    name: str
    op_types: tuple[str, ...]  # empty: the pass looks at the whole graph

    def run(self, graph: gs.Graph) -> PassResult: ...


def result(
    name: str, counts: Mapping[str, int] | None = None, skipped: Sequence[SkippedNode] = ()
) -> PassResult:
    """Build a PassResult whose `modified` is true exactly when some count is non-zero."""
    counts = {k: int(v) for k, v in (counts or {}).items()}
    return PassResult(
        name=name, modified=any(counts.values()), counts=counts, skipped=tuple(skipped)
    )


@dataclass(frozen=True)
class PassRecord:
    """One pass's line in a pipeline report."""

    result: PassResult
    seconds: float

    def to_dict(self) -> dict:
        return {**self.result.to_dict(), "seconds": round(self.seconds, 6)}


@dataclass(frozen=True)
class PipelineReport:
    records: tuple[PassRecord, ...]
    nodes_before: int
    nodes_after: int
    # what `fix`'s check of the result found (verify.CheckResult); None when not checked
    check: Any = None

    @property
    def modified(self) -> bool:
        return any(r.result.modified for r in self.records)

    @property
    def skipped(self) -> tuple[SkippedNode, ...]:
        return tuple(s for r in self.records for s in r.result.skipped)

    def to_dict(self) -> dict:
        return {
            "modified": self.modified,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "passes": [r.to_dict() for r in self.records],
            **({"check": self.check.to_dict()} if self.check is not None else {}),
        }

    def summary_lines(self) -> list[str]:
        lines = []
        for rec in self.records:
            res = rec.result
            what = ", ".join(f"{k}={v}" for k, v in res.counts.items() if v) or "no change"
            lines.append(f"{res.name:<28} {what}  ({rec.seconds * 1000:.1f} ms)")
            lines.extend(f"    skipped {s.node} ({s.op}): {s.reason}" for s in res.skipped)
        if self.check is not None:
            lines.append(self.check.summary_line())
        return lines

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{r.result.name}</td><td>{'yes' if r.result.modified else 'no'}</td>"
            f"<td>{', '.join(f'{k}={v}' for k, v in r.result.counts.items() if v)}</td>"
            f"<td>{len(r.result.skipped)}</td><td>{r.seconds * 1000:.1f} ms</td></tr>"
            for r in self.records
        )
        return (
            "<table><tr><th>pass</th><th>modified</th><th>changes</th><th>skipped</th><th>time</th></tr>"
            f"{rows}</table><p>nodes: {self.nodes_before} &rarr; {self.nodes_after}</p>"
        )


class PassManager:
    """Runs passes in order on one graph-surgeon graph, cleaning up after each change.

    After a pass that modified the graph, dead nodes are removed and the graph is
    re-sorted once, so every pass sees a clean, topologically sorted graph.
    """

    def __init__(
        self,
        passes: Sequence[Pass],
        *,
        cleanup: bool = True,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """`progress(step, index, total)` is called as each step starts: "import", every pass
        name, "export" (a long fix on a big model shows where it is)."""
        for p in passes:
            if isinstance(p, type):  # a class has name, op_types and run too, but run needs self
                raise TypeError(
                    f"{p.__name__} is a pass class: pass an instance, e.g. {p.__name__}()"
                )
            if not isinstance(p, Pass):
                hint = f" (use get_pass({p!r}) for a registered name)" if isinstance(p, str) else ""
                raise TypeError(f"{p!r} is not a pass (needs name, op_types and run){hint}")
        names = [p.name for p in passes]
        self.passes = tuple(passes)
        self.cleanup = cleanup
        self._names = names
        self._progress = progress

    def _step(self, name: str, index: int) -> None:
        if self._progress is not None:
            self._progress(name, index, len(self.passes) + 2)

    def run_graph(self, graph: gs.Graph) -> PipelineReport:
        nodes_before = len(graph.nodes)
        records = []
        for index, p in enumerate(self.passes):
            self._step(p.name, index + 1)
            start = time.perf_counter()
            try:
                res = p.run(graph)
                _check_result(p, res)
                if res.modified and self.cleanup:
                    graph.cleanup(remove_unused_graph_inputs=False).toposort()
            except PassError as exc:
                raise PassError(self._failure_context(index, exc)) from exc
            except Exception as exc:
                raise PassError(self._failure_context(index, exc)) from exc
            seconds = time.perf_counter() - start
            log.info("pass %s: modified=%s counts=%s", p.name, res.modified, dict(res.counts))
            records.append(PassRecord(res, seconds))
        return PipelineReport(tuple(records), nodes_before, len(graph.nodes))

    def run(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, PipelineReport]:
        """Run the pipeline on a copy of `model`; the input model is never mutated.

        When no pass changed anything, the original model object is returned as is, so a
        fixed model saved again is byte-identical.
        """
        # graph-surgeon's export writes names back into the protos it imported from: work on a copy
        self._step("import", 0)
        graph = _import(model)
        report = self.run_graph(graph)
        if not report.modified:
            return model, report
        self._step("export", len(self.passes) + 1)
        out = _export(graph, model)
        problem = _validation_error(out)
        if problem is not None and _validation_error(model) is None:
            # the pipeline broke a valid model: replay it, checking after each change, to name the pass
            self._blame(model, problem)
        return out, report

    def _blame(self, model: onnx.ModelProto, problem: Exception) -> None:
        graph = _import(model)
        for index, p in enumerate(self.passes):
            try:
                res = p.run(graph)
                if res.modified and self.cleanup:
                    graph.cleanup(remove_unused_graph_inputs=False).toposort()
            except Exception as exc:
                raise PassError(self._failure_context(index, exc)) from exc
            if res.modified and (error := _validation_error(_export(graph, model))) is not None:
                raise PassError(
                    self._failure_context(index, error, "produced an invalid model")
                ) from error
        raise PassError(
            f"the passes {', '.join(self._names)} produced an invalid model: {_first_line(problem)}"
        ) from problem

    def _failure_context(self, index: int, exc: BaseException, what: str = "failed") -> str:
        before = ", ".join(self._names[:index]) or "none"
        return f"pass {self._names[index]!r} {what} (passes run before it: {before}): {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_result(p: Pass, res: object) -> None:
    """A pass's report drives what the manager does next (clean up, export): refuse a wrong one."""
    if not isinstance(res, PassResult):
        raise PassError(f"run() returned {type(res).__name__}, not a PassResult")
    if res.name != p.name:
        raise PassError(f"run() returned the result of pass {res.name!r}")


def _import(model: onnx.ModelProto) -> gs.Graph:
    """graph-surgeon's graph of a copy of `model` (its export writes names back into the protos).

    A value_info entry for a graph input or output is dropped from the copy: graph-surgeon lets it
    override the declared type, so an output declared [1, seqlen] whose value_info has no shape
    (ddddocr's common_old.onnx) was exported without one, which the ONNX checker refuses.
    """
    working = onnx.ModelProto()
    working.CopyFrom(model)
    io_names = {v.name for v in (*working.graph.input, *working.graph.output)}
    if any(v.name in io_names for v in working.graph.value_info):
        kept = [v for v in working.graph.value_info if v.name not in io_names]
        del working.graph.value_info[:]
        working.graph.value_info.extend(kept)
    return gs.import_onnx(working)


def _export(graph: gs.Graph, source: onnx.ModelProto) -> onnx.ModelProto:
    out = export_graph(graph)
    _carry_model_metadata(source, out)
    if out.ir_version < 4:
        _list_initializers_as_inputs(out.graph)
    return out


def export_graph(graph: gs.Graph) -> onnx.ModelProto:
    """gs.export_onnx with its failures as one PassError line (a string constant, for one,
    makes graph-surgeon's exporter raise a TypeError; TensorRT has no string type either)."""
    try:
        return gs.export_onnx(graph, do_type_check=False)
    except (TypeError, ValueError) as exc:
        strings = [
            name
            for name, t in graph.tensors().items()
            if isinstance(t, gs.Constant)
            and getattr(t.values, "dtype", None) is not None
            and t.values.dtype.kind in "OSU"
        ]
        if strings:
            raise PassError(
                f"tensor {strings[0]!r} holds strings, which graph-surgeon cannot write back "
                "(and TensorRT has no string type); remove it from the model first"
            ) from None
        raise PassError(f"cannot write the model back: {_first_line(exc)}") from None


def _list_initializers_as_inputs(graph: onnx.GraphProto) -> None:
    """IR < 4 requires every initializer to be a graph input too (graph-surgeon lists none)."""
    listed = {v.name for v in graph.input}
    graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in graph.initializer
        if t.name not in listed
    )


# the checker serialises the model; beyond protobuf's 2 GiB it can only check a file
_CHECK_SIZE_LIMIT = 2**31 - 2**20


def _validation_error(model: onnx.ModelProto) -> Exception | None:
    """Why the ONNX checker (with strict shape inference) refuses `model`, or None."""
    # summed per tensor: ByteSize() of the whole model would serialise it once more
    if tensor_bytes(model) > _CHECK_SIZE_LIMIT:
        log.info("model over 2 GiB: output of the pass pipeline not checked")
        return None
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError, ...
        return exc
    return None


def _carry_model_metadata(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    """graph-surgeon export drops model-level fields; keep what users rely on."""
    dst.ir_version = src.ir_version
    dst.producer_name = src.producer_name
    dst.producer_version = src.producer_version
    dst.domain = src.domain
    dst.model_version = src.model_version
    dst.doc_string = src.doc_string
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)
    # opsets: keep the source's, plus any domain a pass introduced
    src_opsets = {o.domain: o.version for o in src.opset_import}
    for o in dst.opset_import:
        if o.domain in src_opsets:
            o.version = max(o.version, src_opsets[o.domain])
