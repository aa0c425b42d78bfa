"""TensorRT compatibility: which ONNX parser version refuses what (targets), the rules, and `lint`.

`lint_model(model, "tensorrt-7.1")` lists findings without changing anything;
`passes_for_target(target, findings)` gives the pipeline `onnx2trt fix` runs to repair what
can be repaired. Facts live in targets.py (data), checks in rules.py (one function each).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import onnx
import onnx_graphsurgeon as gs

from .rules import NOTE_RULES, RULE_NAMES, RULES
from .targets import DEFAULT_TARGET, TARGETS, Target, get_target

if TYPE_CHECKING:
    from ..passes import Pass

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TARGET",
    "PASS_ORDER",
    "RULE_NAMES",
    "TARGETS",
    "Finding",
    "Target",
    "get_target",
    "lint_graph",
    "lint_model",
    "lint_notes",
    "pass_names_for_target",
    "passes_for_target",
]

# Canonical order of the fixing passes: folding first (it turns computed scales into
# constants that fix-resize and the parser can read), cleanup last.
PASS_ORDER: tuple[str, ...] = (
    "fold-constants",
    "fix-resize",
    "decompose-gather-elements",
    "strip-scatter-reduction",
    "cleanup",
)


@dataclass(frozen=True)
class Finding:
    """One node the target's parser would refuse. `fix_pass` None means no automatic fix."""

    node: str
    op: str
    rule: str
    message: str
    fix_pass: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        fix = self.fix_pass or "no automatic fix"
        return f"{self.node} ({self.op}) [{self.rule}] {self.message} -> {fix}"


def _resolve(target: Target | str) -> Target:
    return target if isinstance(target, Target) else get_target(target)


def _default_opset(graph: gs.Graph) -> int:
    opsets = getattr(graph, "import_domains", None) or []
    for entry in opsets:
        if getattr(entry, "domain", None) in ("", "ai.onnx"):
            return int(entry.version)
    return int(graph.opset) if graph.opset is not None else 11


def _walk(graph: gs.Graph):
    """Every node, subgraphs (If/Loop/Scan bodies) included."""
    for node in graph.nodes:
        yield node
        for value in node.attrs.values():
            subgraphs = value if isinstance(value, list) else [value]
            for sub in subgraphs:
                if isinstance(sub, gs.Graph):
                    yield from _walk(sub)


def lint_graph(graph: gs.Graph, target: Target | str) -> list[Finding]:
    """Findings for `graph` (not modified) against `target`, in node order."""
    tgt = _resolve(target)
    opset = _default_opset(graph)
    findings: list[Finding] = []
    for index, node in enumerate(_walk(graph)):
        name = node.name or f"<{node.op} #{index}>"
        for rule in RULES:
            if rule.op_types and node.op not in rule.op_types:
                continue
            if rule.op_types and node.domain not in (None, "", "ai.onnx"):
                continue
            hit = rule.check(node, tgt, opset)
            if hit is not None:
                findings.append(Finding(name, node.op, rule.name, hit.message, hit.fix_pass))
    log.debug("lint %s: %d findings on %d nodes", tgt.name, len(findings), len(graph.nodes))
    return findings


_NON_TENSOR_VALUES = ("sequence_type", "optional_type", "map_type", "sparse_tensor_type")


def _io_findings(model: onnx.ModelProto, tgt: Target) -> list[Finding]:
    """Graph inputs/outputs that are not tensors (sequence, optional, map): the parser takes only
    tensors ("Failed to convert ONNX date type to TensorRT data type")."""
    findings = []
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            which = value.type.WhichOneof("value")
            if which in _NON_TENSOR_VALUES:
                findings.append(
                    Finding(
                        f"<graph {kind} {value.name}>",
                        "",
                        "io-type-unsupported",
                        f"{tgt.name} takes only tensors as graph inputs and outputs; "
                        f"{value.name!r} is a {which.removesuffix('_type')}",
                        None,
                    )
                )
    return findings


def lint_model(model: onnx.ModelProto, target: Target | str) -> list[Finding]:
    """Findings for `model` against `target`; the model is not modified."""
    tgt = _resolve(target)  # unknown target: fail before the (possibly slow) import
    return _io_findings(model, tgt) + lint_graph(gs.import_onnx(model), tgt)


def lint_notes(model: onnx.ModelProto, target: Target | str) -> list[str]:
    """A model opset beyond what the target's parser reads, and the nodes that makes unreadable.

    Parsers do not refuse a newer opset as such (onnx-tensorrt's ModelImporter only warns below
    opset 7), but an op whose attribute became an input after the parser's last opset is read
    wrongly: TensorRT 7.1 aborts on Unsqueeze-13 ("Attribute not found: axes"). Those nodes are
    listed here (rule input-form-too-new) rather than as findings; see rules.NOTE_RULES.
    """
    tgt = _resolve(target)
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset <= tgt.max_opset:
        return []
    notes = [
        f"the model declares ONNX opset {opset}; {tgt.name}'s parser reads opsets up to "
        f"{tgt.max_opset}"
    ]
    for index, node in enumerate(_walk(gs.import_onnx(model))):
        for rule in NOTE_RULES:
            if node.op not in rule.op_types or node.domain not in (None, "", "ai.onnx"):
                continue
            hit = rule.check(node, tgt, opset)
            if hit is not None:
                name = node.name or f"<{node.op} #{index}>"
                notes.append(f"{name} ({node.op}) [{rule.name}] {hit.message}")
    return notes


def pass_names_for_target(
    target: Target | str, findings: list[Finding] | None = None
) -> list[tuple[str, dict]]:
    """(pass name, options) of the fixing pipeline, in PASS_ORDER.

    Without findings: every pass the target can need. With findings: the passes they name
    (nothing when none has an automatic fix), with fold-constants first and cleanup last.
    """
    tgt = _resolve(target)
    if findings is None:
        wanted = {"fold-constants", "cleanup"}
        if tgt.sizes_fix_helps:
            wanted.add("fix-resize")
        if not tgt.gather_elements:
            wanted.add("decompose-gather-elements")
        if tgt.scatter_nd_reduction_attr_refused:
            wanted.add("strip-scatter-reduction")
    else:
        wanted = {f.fix_pass for f in findings if f.fix_pass}
        if not wanted:
            return []
        wanted |= {"fold-constants", "cleanup"}
    extra = sorted(wanted - set(PASS_ORDER))  # a plugin pass named by a finding
    names = [n for n in PASS_ORDER if n in wanted] + extra
    options = {"fix-resize": {"accepted_modes": tgt.resize_linear_scale_modes}}
    return [(n, dict(options.get(n, {}))) for n in names]


def passes_for_target(target: Target | str, findings: list[Finding] | None = None) -> list[Pass]:
    """Instances of the passes `onnx2trt fix` runs for `target` (see pass_names_for_target).

    Instantiated through the pass registry, so a plugin registered under a built-in name
    is used; an unknown name raises UsageError.
    """
    from ..passes import get_pass

    return [get_pass(name, **opts) for name, opts in pass_names_for_target(target, findings)]
