"""compare(): run two runners on the same inputs and say, per output, how far apart they are.

Runner B is the reference (usually OrtRunner on the FP32 model). An element passes when
`|a - b| <= atol + rtol * |b|` (numpy.isclose's rule), NaNs must sit in the same places,
and an output passes when every element does. Besides pass/fail the report keeps what a
person needs to judge an INT8/FP16 engine, over all feeds together (finite elements):

- `max_abs`: max |a - b|;
- `max_rel`: max |a - b| / max |b|, relative to the reference output's largest magnitude, so
  elements near zero do not blow it up (each worst element also carries its own |a - b| / |b|);
- `mean_abs`: mean |a - b|;
- `cosine`: cosine similarity of a and b as flat vectors;
- `sqnr_db`: 10 log10(sum b^2 / sum (a - b)^2), inf when identical;
- the worst elements with their feed and index.

These are the metrics of `onnx2trt_lib.compare` and `onnx2trt compare`; the per-tensor view of
a quantized model (`per_tensor=True`) adds the SQNR of each quantized tensor.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RuntimeExecutionError
from .base import Runner, in_float_type

_TINY = 1e-12


@dataclass(frozen=True)
class WorstElement:
    """One badly matching element: which feed, where, both values and the errors."""

    feed: int
    index: tuple[int, ...]
    a: float
    b: float
    abs_err: float
    rel_err: float


@dataclass(frozen=True)
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    passed: bool
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    mismatches: int
    total: int
    worst: tuple[WorstElement, ...]
    sqnr_db: float = float("nan")
    reason: str = (
        ""  # non-empty when the output could not be compared (shape, NaN pattern, missing)
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "passed": self.passed,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "mean_abs": self.mean_abs,
            "cosine": self.cosine,
            "sqnr_db": self.sqnr_db,
            "mismatches": self.mismatches,
            "total": self.total,
            "reason": self.reason,
            "worst": [
                {
                    "feed": w.feed,
                    "index": list(w.index),
                    "a": w.a,
                    "b": w.b,
                    "abs_err": w.abs_err,
                    "rel_err": w.rel_err,
                }
                for w in self.worst
            ],
        }


@dataclass(frozen=True)
class CompareReport:
    runner_a: str
    runner_b: str
    atol: float
    rtol: float
    feeds: int
    outputs: tuple[OutputComparison, ...] = field(default_factory=tuple)
    tensors: tuple[Any, ...] = ()  # per-tensor SQNR of a quantized model (quant.TensorStats)
    metric: Mapping[str, float] = field(default_factory=dict)  # reference/candidate/drop

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def __getitem__(self, name: str) -> OutputComparison:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runner_a": self.runner_a,
            "runner_b": self.runner_b,
            "atol": self.atol,
            "rtol": self.rtol,
            "feeds": self.feeds,
            "passed": self.passed,
            "outputs": [o.to_dict() for o in self.outputs],
            "tensors": [
                {
                    "name": t.name,
                    "consumer_ops": list(t.consumer_ops),
                    "sqnr_db": t.sqnr_db,
                    "cosine": t.cosine,
                }
                for t in self.tensors
            ],
            "metric": dict(self.metric),
        }

    def summary(self) -> list[str]:
        """Lines a terminal can print: one per output, then the verdict."""
        lines = [
            f"{self.runner_a} vs {self.runner_b} (reference), {self.feeds} feed(s), atol={self.atol:g} rtol={self.rtol:g}"
        ]
        for o in self.outputs:
            verdict = "PASS" if o.passed else "FAIL"
            if o.reason:
                lines.append(f"  {verdict} {o.name}: {o.reason}")
                continue
            lines.append(
                f"  {verdict} {o.name} {list(o.shape)}: max_abs={o.max_abs:.3g} max_rel={o.max_rel:.3g} "
                f"mean_abs={o.mean_abs:.3g} cosine={o.cosine:.6f} sqnr={o.sqnr_db:.1f}dB "
                f"mismatches={o.mismatches}/{o.total}"
            )
            for w in o.worst[:3]:
                if w.abs_err > 0:
                    lines.append(
                        f"      worst at feed {w.feed} {list(w.index)}: a={w.a:.6g} b={w.b:.6g} |a-b|={w.abs_err:.3g}"
                    )
        if self.tensors:
            lines.append(
                f"quantized tensors, worst {min(10, len(self.tensors))} of {len(self.tensors)}:"
            )
            for t in self.tensors[:10]:
                lines.append(f"  {t.name:<40} {t.sqnr_db:7.2f} dB  -> {','.join(t.consumer_ops)}")
        for key, value in self.metric.items():
            lines.append(f"metric {key}: {value:.6g}")
        lines.append("PASSED" if self.passed else "FAILED")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.summary())

    def _repr_html_(self) -> str:
        esc = html.escape
        verdict = (
            '<span style="color:green">PASSED</span>'
            if self.passed
            else '<span style="color:red">FAILED</span>'
        )
        head = (
            f"<p><b>{esc(self.runner_a)}</b> vs <b>{esc(self.runner_b)}</b> (reference): {verdict}"
            f" &mdash; atol={self.atol:g}, rtol={self.rtol:g}, {self.feeds} feed(s)</p>"
        )
        rows = []
        for o in self.outputs:
            worst = "<br>".join(
                f"{list(w.index)}: {w.a:.6g} vs {w.b:.6g}" for w in o.worst[:3] if w.abs_err > 0
            ) or esc(o.reason)
            rows.append(
                f"<tr><td>{esc(o.name)}</td><td>{'pass' if o.passed else 'FAIL'}</td><td>{list(o.shape)}</td>"
                f"<td>{o.max_abs:.3g}</td><td>{o.max_rel:.3g}</td><td>{o.cosine:.6f}</td>"
                f"<td>{o.mismatches}/{o.total}</td><td>{worst}</td></tr>"
            )
        table = (
            "<table><tr><th>output</th><th>result</th><th>shape</th><th>max abs</th><th>max rel</th>"
            "<th>cosine</th><th>mismatches</th><th>worst</th></tr>" + "".join(rows) + "</table>"
        )
        if self.tensors:
            table += (
                "<table><tr><th>quantized tensor (worst first)</th><th>feeds</th><th>SQNR dB</th>"
                "<th>cosine</th></tr>"
                + "".join(
                    f"<tr><td>{esc(t.name)}</td><td>{esc(','.join(t.consumer_ops))}</td>"
                    f"<td>{t.sqnr_db:.2f}</td><td>{t.cosine:.6f}</td></tr>"
                    for t in self.tensors
                )
                + "</table>"
            )
        if self.metric:
            table += (
                "<p>"
                + ", ".join(f"metric {esc(k)}: {v:.6g}" for k, v in self.metric.items())
                + "</p>"
            )
        return head + table


def _shared_precision(feed: Mapping[str, Any], runners: Iterable[Runner]) -> dict[str, Any]:
    """Round each float input once, to the narrowest float type any runner takes for it.

    An FP16-I/O model sees float16 values; its FP32 reference must see the *same* values
    (float16-rounded, then widened), or the comparison measures input rounding, not the model.
    """
    narrowest: dict[str, np.dtype] = {}
    for runner in runners:
        for spec in getattr(runner, "inputs", ()):
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f" and (
                spec.name not in narrowest or dtype.itemsize < narrowest[spec.name].itemsize
            ):
                narrowest[spec.name] = dtype
    out = dict(feed)
    for name, value in feed.items():
        arr = np.asarray(value)
        target = narrowest.get(name)
        if target is not None and arr.dtype.kind == "f" and target.itemsize < arr.dtype.itemsize:
            out[name] = arr.astype(target)
    return out


def _in_precision(runner: Runner, feed: Mapping[str, Any]) -> dict[str, Any]:
    """The same data in each runner's float input type: an FP16-I/O model is compared with its
    FP32 source on float16-rounded inputs (rounded once by `_shared_precision`) instead of
    failing on the dtype."""
    dtypes = {spec.name: spec.dtype for spec in getattr(runner, "inputs", ())}
    return {name: in_float_type(value, dtypes.get(name)) for name, value in feed.items()}


def compare(
    runner_a: Runner,
    runner_b: Runner,
    data: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    outputs: Iterable[str] | None = None,
    top_k: int = 5,
) -> CompareReport:
    """Run both runners on each feed in `data` (one dict or an iterable of dicts) and compare outputs.

    Outputs are matched by name; an output only one runner has fails with a reason. Errors
    accumulate over feeds: max/worst over all, cosine over all elements together.
    """
    if not (
        atol >= 0 and rtol >= 0
    ):  # NaN fails too: every comparison with it is False, so all would pass
        raise RuntimeExecutionError(
            f"compare: atol and rtol must be >= 0, not NaN (got atol={atol}, rtol={rtol})"
        )
    feeds = [data] if isinstance(data, Mapping) else list(data)
    if not feeds:
        raise RuntimeExecutionError("compare: no input data; give at least one {name: array} feed")
    names_a = [s.name for s in runner_a.outputs]
    names_b = [s.name for s in runner_b.outputs]
    wanted = list(outputs) if outputs is not None else [n for n in names_a if n in names_b]
    acc: dict[str, _Accumulator] = {name: _Accumulator(name, atol, rtol, top_k) for name in wanted}
    for i, feed in enumerate(feeds):
        feed = _shared_precision(feed, (runner_a, runner_b))
        out_a = runner_a.infer(_in_precision(runner_a, feed))
        out_b = runner_b.infer(_in_precision(runner_b, feed))
        for name in wanted:
            if name not in out_a or name not in out_b:
                who = (
                    getattr(runner_a, "name", "A")
                    if name not in out_a
                    else getattr(runner_b, "name", "B")
                )
                acc[name].fail(f"output missing from {who}")
                continue
            acc[name].add(i, out_a[name], out_b[name])
    results = [a.result() for a in acc.values()]
    for name in sorted(set(names_a) ^ set(names_b)):
        if outputs is None:
            only = "A" if name in names_a else "B"
            results.append(_missing(name, f"only runner {only} has this output"))
    return CompareReport(
        runner_a=getattr(runner_a, "name", type(runner_a).__name__),
        runner_b=getattr(runner_b, "name", type(runner_b).__name__),
        atol=float(atol),
        rtol=float(rtol),
        feeds=len(feeds),
        outputs=tuple(results),
    )


def _missing(name: str, reason: str) -> OutputComparison:
    nan = float("nan")
    return OutputComparison(name, (), False, nan, nan, nan, nan, 0, 0, (), reason=reason)


class _Accumulator:
    """Running statistics of one output over many feeds (dot products for the cosine)."""

    def __init__(self, name: str, atol: float, rtol: float, top_k: int) -> None:
        self.name, self.atol, self.rtol, self.top_k = name, atol, rtol, top_k
        self.shape: tuple[int, ...] = ()
        self.max_abs = self.max_ref = 0.0
        self.sum_abs = self.signal = self.noise = 0.0
        self.dot = self.norm_a = self.norm_b = 0.0
        self.mismatches = self.total = 0
        self.worst: list[WorstElement] = []
        self.reason = ""

    def fail(self, reason: str) -> None:
        self.reason = self.reason or reason

    def add(self, feed: int, a: Any, b: Any) -> None:
        a = np.asarray(a)
        b = np.asarray(b)
        self.shape = tuple(b.shape)
        if a.shape != b.shape:
            self.fail(f"shape {list(a.shape)} vs {list(b.shape)} (feed {feed})")
            return
        if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
            self.fail(f"cannot compare dtypes {a.dtype} and {b.dtype}")
            return
        a64 = a.astype(np.float64).ravel()
        b64 = b.astype(np.float64).ravel()
        nan_a, nan_b = np.isnan(a64), np.isnan(b64)
        if not np.array_equal(nan_a, nan_b):
            where = int(np.flatnonzero(nan_a != nan_b)[0])
            self.fail(
                f"NaN in one output only, first at {[int(i) for i in np.unravel_index(where, a.shape)]} (feed {feed})"
            )
        both = nan_a & nan_b
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(a64 - b64)
        diff[both] = 0.0
        diff[nan_a ^ nan_b] = np.inf
        # inf == inf of the same sign is a match; inf - inf gives nan above
        same_inf = np.isinf(a64) & (a64 == b64)
        diff[same_inf] = 0.0
        diff = np.where(np.isnan(diff), np.inf, diff)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            rel = diff / np.maximum(np.abs(np.nan_to_num(b64)), _TINY)
        rel[diff == 0] = 0.0
        bad = diff > self.atol + self.rtol * np.abs(np.where(np.isfinite(b64), b64, 0.0))
        self.mismatches += int(bad.sum())
        self.total += a64.size
        if a64.size:
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.sum_abs += float(diff[np.isfinite(diff)].sum())
            finite = np.isfinite(a64) & np.isfinite(b64)
            self.max_ref = max(self.max_ref, float(np.abs(b64[finite]).max(initial=0.0)))
            self.signal += float(b64[finite] @ b64[finite])
            self.noise += float(diff[finite] @ diff[finite])
            self.dot += float(a64[finite] @ b64[finite])
            self.norm_a += float(a64[finite] @ a64[finite])
            self.norm_b += float(b64[finite] @ b64[finite])
            k = min(self.top_k, a64.size)
            top = np.argpartition(-diff, k - 1)[:k]
            for flat in top:
                self.worst.append(
                    WorstElement(
                        feed=feed,
                        index=tuple(int(x) for x in np.unravel_index(int(flat), a.shape)),
                        a=float(a64[flat]),
                        b=float(b64[flat]),
                        abs_err=float(diff[flat]),
                        rel_err=float(rel[flat]),
                    )
                )
            self.worst.sort(key=lambda w: (-w.abs_err, w.feed, w.index))
            del self.worst[self.top_k :]

    def result(self) -> OutputComparison:
        if self.norm_a == 0 and self.norm_b == 0:
            cosine = 1.0 if self.total else float("nan")
        elif self.norm_a == 0 or self.norm_b == 0:
            cosine = 0.0
        else:
            cosine = self.dot / (np.sqrt(self.norm_a) * np.sqrt(self.norm_b))
        passed = not self.reason and self.mismatches == 0 and self.total > 0
        if self.max_ref > 0:
            max_rel = self.max_abs / self.max_ref
        else:
            max_rel = 0.0 if self.max_abs == 0 else float("inf")
        if self.noise == 0:
            sqnr = float("inf") if self.total else float("nan")
        elif self.signal == 0:
            sqnr = float("-inf")
        else:
            sqnr = 10.0 * float(np.log10(self.signal / self.noise))
        return OutputComparison(
            name=self.name,
            shape=self.shape,
            passed=passed,
            max_abs=self.max_abs,
            max_rel=max_rel,
            mean_abs=self.sum_abs / self.total if self.total else float("nan"),
            cosine=float(cosine),
            mismatches=self.mismatches,
            total=self.total,
            worst=tuple(self.worst),
            sqnr_db=sqnr,
            reason=self.reason if self.total or self.reason else "no elements",
        )
