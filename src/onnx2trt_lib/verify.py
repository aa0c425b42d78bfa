"""`fix` checks itself (as onnxsim does): the fixed model must compute what the original does.

Both models run in ONNX Runtime on the same inputs and every output is compared: same shape,
same dtype, values equal (integers and bools exactly, floats within a tolerance by dtype: the
fixed graph may fuse differently). Inputs are generated from the model's declared inputs
(dynamic dims get small sizes, one size per dim name; floats standard normal; integers small
non-negative values, then all ones or all the dim size for shape-like inputs) over a few seeds, or given by the user.
A size/value choice the original cannot run on is replaced by the next one; when none works, or
ONNX Runtime cannot load the original at all, the check is skipped and says why.

On a mismatch the pipeline is replayed pass by pass on the input that showed it, and the error
names the first pass after which the output differs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from .errors import EquivalenceError, Onnx2TrtError, UsageError

if TYPE_CHECKING:
    from .passes import Pass

log = logging.getLogger(__name__)

SEEDS = (0, 1, 2)
SLOW_RUN = 1.0  # seconds: a model slower than this per run is checked on one input set
# (size of every dynamic dim, how integer inputs are filled), tried in order until the original runs
# ("size": integer inputs all equal the dynamic size, e.g. a shape input that must match a batch)
_ATTEMPTS = (
    (2, "small"),
    (2, "size"),
    (1, "ones"),
    (32, "small"),
    (64, "small"),
    (256, "small"),
)
# float tolerance by dtype: |a - b| <= atol * max(1, max|b|) + rtol * |b|
_FLOAT_TOL = {
    np.dtype(np.float16): (1e-3, 1e-2),
    np.dtype(np.float32): (1e-5, 1e-3),
    np.dtype(np.float64): (1e-7, 1e-5),
}
_LARGE = 2**31 - 2**20  # ONNX Runtime takes models as one serialized proto


@dataclass(frozen=True)
class CheckResult:
    """What the check did: `status` is "passed" or "skipped" (a mismatch raises instead)."""

    status: str
    feeds: int = 0
    outputs: int = 0
    note: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "feeds": self.feeds,
            "outputs": self.outputs,
            "note": self.note,
            "seconds": round(self.seconds, 6),
        }

    def summary_line(self) -> str:
        if self.status == "passed" and not self.feeds:
            return f"{'check (ONNX Runtime)':<28} nothing to check: {self.note}"
        if self.status == "passed":
            what = f"{self.outputs} output(s) equal on {self.feeds} input set(s)"
            extra = f"; {self.note}" if self.note else ""
            return f"{'check (ONNX Runtime)':<28} {what}{extra}  ({self.seconds * 1000:.1f} ms)"
        return f"{'check (ONNX Runtime)':<28} skipped: {self.note}"


def check_fix(
    original: onnx.ModelProto,
    fixed: onnx.ModelProto,
    passes: Sequence[Pass],
    *,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> CheckResult:
    """Compare `fixed` with `original` in ONNX Runtime; raise EquivalenceError naming the pass
    of `passes` (the pipeline that made `fixed`) after which an output first differs."""
    start = time.perf_counter()
    if fixed is original:
        return CheckResult("passed", note="model unchanged", seconds=time.perf_counter() - start)
    lossy = [getattr(p, "name", "?") for p in passes if getattr(p, "changes_values", False)]
    if lossy:
        return CheckResult("skipped", note=f"{', '.join(lossy)} change values on purpose")
    if _too_large(original) or _too_large(fixed):
        return CheckResult("skipped", note="model over 2 GiB: ONNX Runtime cannot take it whole")
    try:
        ref = _session(original)
    except _CannotRun as exc:
        return CheckResult("skipped", note=f"ONNX Runtime cannot run the original model: {exc}")
    try:
        if inputs is not None:
            feeds = [dict(inputs)]
            expected = [_run(ref, feeds[0])]
        else:
            feeds, expected = _generated_feeds(original, ref)
    except _CannotRun as exc:
        if inputs is not None:
            raise UsageError(
                f"check: ONNX Runtime cannot run the original model on the given inputs: {exc}"
            ) from None
        return CheckResult("skipped", note=f"ONNX Runtime cannot run the original model: {exc}")
    varying = _varying_outputs(original, ref, feeds[0], expected[0])
    compared = [name for name in _output_names(ref) if name not in varying]
    problem = _first_difference(fixed, feeds, expected, compared)
    if problem is not None:
        index, what = problem
        culprit = _culprit(original, passes, feeds[index], expected[index], compared)
        where = f"after pass {culprit!r}" if culprit else "after the whole pipeline"
        source = "the given inputs" if inputs is not None else f"generated input set {index}"
        raise EquivalenceError(
            f"fix changed what the model computes {where}: {what} on {source}; nothing was "
            "written (--no-check / check=False skips this check)"
        )
    note = f"{len(varying)} random output(s) not compared" if varying else ""
    return CheckResult(
        "passed", len(feeds), len(compared), note, seconds=time.perf_counter() - start
    )


class _CannotRun(Exception):
    pass


def _too_large(model: onnx.ModelProto) -> bool:
    from ._weights import tensor_bytes

    return tensor_bytes(model) > _LARGE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _session(model: onnx.ModelProto) -> Any:
    """A CPU session that runs the graph as written (no ORT graph rewrites: the two graphs are
    compared, not ONNX Runtime's fusions of them) and logs nothing (a tried size may fail)."""
    from ._optional import onnxruntime
    from .runtime.ort_runner import OrtRunner

    ort = onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        return OrtRunner(model, name="model", session_options=options)
    except Onnx2TrtError as exc:
        raise _CannotRun(_first_line(exc).removeprefix("model: ")) from None


def _run(runner: Any, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        return runner.infer(feed)
    except Onnx2TrtError as exc:
        raise _CannotRun(_first_line(exc).removeprefix("model (onnxruntime): ")) from None


def _output_names(runner: Any) -> list[str]:
    return [spec.name for spec in runner.outputs]


def _declared_dims(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Each graph input's dims: an int, a dim name, or None (unnamed dynamic)."""
    dims = {}
    for value in model.graph.input:
        shape = value.type.tensor_type.shape
        dims[value.name] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim
        ]
    return dims


def _generated_feeds(model: onnx.ModelProto, ref: Any) -> tuple[list[dict], list[dict]]:
    """Input sets for SEEDS, with the first size/fill choice the original runs on, and the
    original's outputs on them. A model that takes over SLOW_RUN seconds a run gets one set."""
    declared = _declared_dims(model)
    last: _CannotRun | None = None
    for size, fill in _ATTEMPTS:
        feeds = [_feed(ref.inputs, declared, size, fill, seed) for seed in SEEDS]
        start = time.perf_counter()
        try:
            first = _run(ref, feeds[0])
        except _CannotRun as exc:
            last = last or exc
            continue
        if time.perf_counter() - start > SLOW_RUN:
            return feeds[:1], [first]
        return feeds, [first, *(_run(ref, feed) for feed in feeds[1:])]
    assert last is not None
    raise _CannotRun(f"{last} (and on every other generated input size tried)")


def _feed(
    specs: Sequence[Any], declared: Mapping[str, list], size: int, fill: str, seed: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        dims = declared.get(spec.name) or list(spec.shape)
        shape = tuple(d if isinstance(d, int) and d > 0 else size for d in dims)
        if spec.dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feed[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        elif fill in ("ones", "size"):
            feed[spec.name] = np.full(shape, 1 if fill == "ones" else size, spec.dtype)
        else:
            feed[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feed


def _varying_outputs(
    model: onnx.ModelProto, ref: Any, feed: Mapping[str, np.ndarray], first: Mapping
) -> set[str]:
    """Outputs that differ between two runs of the original (random ops): not comparable."""
    from .passes.fold_constants import RANDOM_OPS

    graphs = [model.graph]
    ops = set()
    while graphs:
        g = graphs.pop()
        for node in g.node:
            ops.add(node.op_type)
            graphs.extend(a.g for a in node.attribute if a.HasField("g"))
            graphs.extend(a.graphs for a in node.attribute if len(a.graphs))
    if not ops & RANDOM_OPS:
        return set()
    second = _run(ref, feed)
    return {name for name in first if _difference(first[name], second.get(name)) is not None}


def _first_difference(
    fixed: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    expected: Sequence[Mapping[str, np.ndarray]],
    compared: Sequence[str],
) -> tuple[int, str] | None:
    """(input set, what differs) for the first differing output, or None when all match."""
    try:
        runner = _session(fixed)
    except _CannotRun as exc:
        return 0, f"ONNX Runtime cannot load the fixed model ({exc})"
    missing = [n for n in compared if n not in _output_names(runner)]
    if missing:
        return 0, f"output {missing[0]!r} is missing"
    for index, (feed, want) in enumerate(zip(feeds, expected, strict=True)):
        try:
            got = _run(runner, feed)
        except _CannotRun as exc:
            return index, f"ONNX Runtime cannot run the fixed model ({exc})"
        for name in compared:
            what = _difference(got[name], want[name])
            if what is not None:
                return index, f"output {name!r} differs ({what})"
    return None


def _difference(got: Any, want: Any) -> str | None:
    """Why `got` is not `want` (shape, dtype, values), or None."""
    if want is None or got is None:
        return "missing"
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"shape {list(got.shape)} instead of {list(want.shape)}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} instead of {want.dtype}"
    if want.dtype.kind not in "fc":
        bad = (
            np.flatnonzero(got.reshape(-1) != want.reshape(-1))
            if got.size
            else np.empty(0, np.intp)
        )
        if len(bad):
            i = int(bad[0])
            return f"{len(bad)} of {got.size} values, first at {_index(i, want.shape)}: {got.reshape(-1)[i]} instead of {want.reshape(-1)[i]}"
        return None
    atol, rtol = _FLOAT_TOL.get(want.dtype, (1e-5, 1e-3))
    g, w = got.astype(np.float64).reshape(-1), want.astype(np.float64).reshape(-1)
    finite = np.isfinite(w)
    scale = max(1.0, float(np.max(np.abs(w[finite]), initial=0.0)))
    with np.errstate(invalid="ignore", over="ignore"):
        close = (np.abs(g - w) <= atol * scale + rtol * np.abs(w)) | (g == w)
    close |= np.isnan(g) & np.isnan(w)
    bad = np.flatnonzero(~close)
    if len(bad):
        i = int(bad[0])
        return (
            f"{len(bad)} of {got.size} values, first at {_index(i, want.shape)}: "
            f"{g[i]:.6g} instead of {w[i]:.6g}"
        )
    return None


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(flat, shape)] if shape else []


def _culprit(
    original: onnx.ModelProto,
    passes: Sequence[Pass],
    feed: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    compared: Sequence[str],
) -> str | None:
    """Replay the pipeline one pass longer each time; the first prefix whose output differs names the pass."""
    from .passes import PassManager

    for k in range(1, len(passes) + 1):
        try:
            partial, _ = PassManager(list(passes[:k])).run(original)
        except Onnx2TrtError:
            return getattr(passes[k - 1], "name", None)
        if partial is original:
            continue
        if _first_difference(partial, [feed], [expected], compared) is not None:
            return getattr(passes[k - 1], "name", None)
    return None
