"""Targeted one-line mutation testing of the core modules (a small stand-in for mutmut).

Each mutant changes one AST node of one module: a comparison flipped or moved by one
(`<` <-> `<=`, `==` <-> `!=`, `is` <-> `is not`), `and` <-> `or`, a `not` dropped, an integer
constant moved by one, `+` <-> `-`, a guard dropped (an `if` whose body raises or returns), a
`return X` made `return None`, a call statement dropped. The module is re-written with
`ast.unparse` into a copy of src/ (the worktree is never touched) and the module's test files run
against it with `pytest -x` under `nice -n 10` and a time limit. A failing run kills the mutant, a
time-out counts as killed, a passing run is a survivor.

    python tools/mutate.py                       # the sampled set, table to stdout
    python tools/mutate.py --per-module 30 --out benchmarks/results/mutation.md
    python tools/mutate.py --list                # every candidate, nothing run
    python tools/mutate.py --only calib/cache.py:164   # mutants on one line (:KIND for one)

The six "named" mutants (bugs that once passed the whole suite) are always run.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "onnx2trt_lib"

# module (relative to the package) -> test files that claim to check it
TESTS: dict[str, list[str]] = {
    "calib/_kernels.py": [
        "tests/calib/test_histogram_state.py",
        "tests/calib/test_entropy_kl.py",
        "tests/calib/test_numeric_edge_cases.py",
    ],
    "calib/histogram.py": [
        "tests/calib/test_histogram_state.py",
        "tests/calib/test_numeric_edge_cases.py",
    ],
    "calib/cache.py": ["tests/calib/test_cache.py"],
    "calib/sidecar.py": ["tests/calib/test_sidecar.py"],
    "passes/fix_resize.py": ["tests/passes/test_fix_resize.py"],
    "passes/insert_qdq.py": ["tests/passes/test_insert_qdq.py"],
    "passes/_infra.py": ["tests/core/test_pass_infra.py", "tests/core/test_pass_manager_guards.py"],
    "passes/to_fp16.py": ["tests/passes/test_to_fp16.py"],
    "passes/decompose_gather_elements.py": ["tests/passes/test_decompose_gather_elements.py"],
    "passes/strip_scatter_reduction.py": ["tests/passes/test_strip_scatter_reduction.py"],
    "passes/fold_constants.py": [
        "tests/passes/test_basic_passes.py",
        "tests/passes/test_review_passes_torch_2.py",
    ],
    "passes/cleanup.py": ["tests/passes/test_basic_passes.py", "tests/core/test_pass_infra.py"],
    "passes/infer_shapes.py": ["tests/passes/test_basic_passes.py"],
    "_io.py": ["tests/core/test_io.py", "tests/test_safe_loading.py"],
}

# sampling weight per module (x --per-module): the modules issue 18 names weigh more
WEIGHT = {
    "calib/_kernels.py": 1.0,
    "calib/histogram.py": 1.4,
    "calib/cache.py": 1.2,
    "calib/sidecar.py": 1.0,
    "passes/fix_resize.py": 1.4,
    "passes/insert_qdq.py": 1.4,
    "_io.py": 1.2,
    "passes/_infra.py": 0.7,
    "passes/to_fp16.py": 0.7,
    "passes/decompose_gather_elements.py": 0.5,
    "passes/fold_constants.py": 0.5,
    "passes/cleanup.py": 0.35,
    "passes/infer_shapes.py": 0.35,
    "passes/strip_scatter_reduction.py": 0.35,
}

# (module, original source line, mutated line): bugs that once passed the whole suite (issue 18)
NAMED = [
    ("calib/histogram.py", "while self.range_max < max_over:", "while self.range_max <= max_over:"),
    ("calib/cache.py", 'line = raw.rstrip("\\r")', "line = raw"),
    ("passes/fix_resize.py", "if out < 1:", "if out < 0:"),
    (
        "passes/insert_qdq.py",
        "return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)",
        "return scale",
    ),
    (
        "calib/sidecar.py",
        'if key.get("data_fingerprint") is None or not cache_path.is_file():',
        "if not cache_path.is_file():",
    ),
    ("_io.py", "os.chmod(tmp, 0o644)", "pass"),
]

_CMP_SWAP: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_LOG_NAMES = {"log", "logging", "warnings"}


@dataclass
class Mutant:
    module: str
    line: int
    kind: str
    before: str
    after: str
    source: str  # the whole mutated module

    @property
    def where(self) -> str:
        return f"{self.module}:{self.line}"


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _is_logging_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    while isinstance(f, ast.Attribute):
        f = f.value
    return isinstance(f, ast.Name) and f.id in _LOG_NAMES


def _ends_in_exit(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Raise, ast.Return, ast.Continue))


def _candidates(tree: ast.Module) -> list[tuple[ast.AST, str, object]]:
    """(node, kind, change) for every one-node mutation; `change` is applied by _apply."""
    out: list[tuple[ast.AST, str, object]] = []
    skip = _docstring_ids(tree)
    in_log: set[int] = set()
    for node in ast.walk(tree):
        if _is_logging_call(node) or isinstance(node, (ast.JoinedStr, ast.Raise)):
            in_log.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip or id(node) in in_log:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _CMP_SWAP:
                    out.append((node, "compare", i))
        elif isinstance(node, ast.BoolOp):
            out.append((node, "boolop", None))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            out.append((node, "not", None))
        elif (
            isinstance(node, ast.Constant)
            and type(node.value) is int
            and not isinstance(node.value, bool)
        ):
            out.append((node, "constant", None))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            out.append((node, "arith", None))
        elif isinstance(node, ast.If) and _ends_in_exit(node.body) and not node.orelse:
            out.append((node, "drop-guard", None))
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                out.append((node, "drop-return-value", None))
        elif (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and not _is_logging_call(node.value)
        ):
            out.append((node, "drop-call", None))
    return out


def _apply(node: ast.AST, kind: str, change: object) -> ast.AST:
    """A mutated copy of `node` (statements dropped become `pass`)."""
    new = copy.deepcopy(node)
    if kind == "compare":
        assert isinstance(new, ast.Compare) and isinstance(change, int)
        new.ops[change] = _CMP_SWAP[type(new.ops[change])]()
    elif kind == "boolop":
        assert isinstance(new, ast.BoolOp)
        new.op = ast.Or() if isinstance(new.op, ast.And) else ast.And()
    elif kind == "not":
        assert isinstance(new, ast.UnaryOp)
        return new.operand
    elif kind == "constant":
        assert isinstance(new, ast.Constant)
        new.value = new.value + 1 if new.value != 1 else 0
    elif kind == "arith":
        assert isinstance(new, ast.BinOp)
        new.op = ast.Sub() if isinstance(new.op, ast.Add) else ast.Add()
    elif kind in ("drop-guard", "drop-call"):
        return ast.Pass()
    elif kind == "drop-return-value":
        assert isinstance(new, ast.Return)
        new.value = None
    return new


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST) -> None:
        self.target, self.replacement = target, replacement

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.replacement
        return super().visit(node)


def _short(node: ast.AST, limit: int = 70) -> str:
    text = " ".join(ast.unparse(node).split())
    if isinstance(node, ast.If):
        text = f"if {ast.unparse(node.test)}: ..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


def mutants_of(module: str) -> list[Mutant]:
    source = (PKG / module).read_text()
    tree = ast.parse(source)
    out = []
    for node, kind, change in _candidates(tree):
        mutated_tree = copy.deepcopy(tree)
        # find the same node in the copy by walking both trees in step
        twin = next(
            b for a, b in zip(ast.walk(tree), ast.walk(mutated_tree), strict=True) if a is node
        )
        replacement = _apply(twin, kind, change)
        new_tree = _Replace(twin, replacement).visit(mutated_tree)
        ast.fix_missing_locations(new_tree)
        out.append(
            Mutant(
                module=module,
                line=node.lineno,  # type: ignore[attr-defined]
                kind=kind,
                before=_short(node),
                after=_short(replacement),
                source=ast.unparse(new_tree),
            )
        )
    return out


def named_mutants() -> list[Mutant]:
    out = []
    for module, before, after in NAMED:
        text = (PKG / module).read_text()
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.strip() == before]
        if len(hits) != 1:
            raise SystemExit(f"named mutant: {before!r} found {len(hits)} times in {module}")
        i = hits[0]
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        lines[i] = indent + after + "\n"
        out.append(Mutant(module, i + 1, "named", before, after, "".join(lines)))
    return out


def _balanced_sample(every: list[Mutant], count: int, rng: random.Random) -> list[Mutant]:
    """`count` mutants taken kind by kind in turn, so integer constants do not crowd out the rest."""
    by_kind: dict[str, list[Mutant]] = {}
    for m in every:
        by_kind.setdefault(m.kind, []).append(m)
    for group in by_kind.values():
        rng.shuffle(group)
    kinds = sorted(by_kind)
    out: list[Mutant] = []
    while len(out) < count and any(by_kind.values()):
        for kind in kinds:
            if by_kind[kind] and len(out) < count:
                out.append(by_kind[kind].pop())
    return out


def run_tests(tests: list[str], env: dict[str, str], limit: float) -> tuple[str, float, str]:
    """('killed' | 'survived' | 'timeout', seconds, first failing test)."""
    cmd = ["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    cmd += ["-m", "not slow", *tests]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, ""
    took = time.monotonic() - start
    if proc.returncode == 0:
        return "survived", took, ""
    if proc.returncode not in (1,):  # 2-5: collection/usage errors also kill (import fails)
        return "killed", took, f"pytest exit {proc.returncode}"
    failed = [ln.split(" ")[1] for ln in proc.stdout.splitlines() if ln.startswith("FAILED ")]
    return "killed", took, failed[0] if failed else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-module", type=int, default=12, help="sampled mutants per module")
    parser.add_argument(
        "--per-module-fixed", action="store_true", help="the same count for every module"
    )
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--modules", nargs="*", default=list(TESTS), help="package-relative paths")
    parser.add_argument(
        "--only", nargs="*", default=None, help="MODULE:LINE to run every mutant of"
    )
    parser.add_argument("--list", action="store_true", help="print candidates, run nothing")
    parser.add_argument("--no-named", action="store_true", help="leave out the six named mutants")
    parser.add_argument("--limit", type=float, default=240.0, help="seconds per mutant")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip running each module's tests unmutated first",
    )
    args = parser.parse_args(argv)

    chosen: list[Mutant] = [] if args.no_named else named_mutants()
    rng = random.Random(args.seed)
    for module in args.modules:
        every = mutants_of(module)
        if args.only is not None:
            wanted = [w.split(":") for w in args.only if w.split(":")[0] == module]
            chosen += [
                m
                for m in every
                if any(m.line == int(w[1]) and (len(w) == 2 or m.kind == w[2]) for w in wanted)
            ]
            continue
        if args.list:
            for m in every:
                print(f"{m.where}\t{m.kind}\t{m.before}  ->  {m.after}")
            continue
        count = (
            args.per_module if args.per_module_fixed else WEIGHT.get(module, 1.0) * args.per_module
        )
        chosen += sorted(_balanced_sample(every, round(count), rng), key=lambda m: m.line)
    if args.list:
        return 0

    work = Path(tempfile.mkdtemp(prefix="onnx2trt-mutate-"))
    src = work / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("*.pyc"))
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    check = subprocess.run(
        [sys.executable, "-c", "import onnx2trt_lib; print(onnx2trt_lib.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not check.startswith(str(src)):
        raise SystemExit(f"the copy is not imported first: {check}")

    rows = []
    try:
        modules = sorted({m.module for m in chosen})
        for module in modules if args.baseline else ():  # unmutated tests must pass
            status, took, why = run_tests(TESTS[module], env, args.limit * 2)
            print(f"baseline {module}: {status} in {took:.1f}s {why}", flush=True)
            if status != "survived":
                raise SystemExit(f"the tests of {module} fail without a mutation: {why}")
        for n, m in enumerate(chosen, 1):
            target = src / "onnx2trt_lib" / m.module
            original = target.read_bytes()
            stat = target.stat()
            target.write_text(m.source)
            try:
                status, took, why = run_tests(TESTS[m.module], env, args.limit)
            finally:
                target.write_bytes(original)
                os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            rows.append((m, status, took, why))
            if args.out is not None:  # after every mutant: a stopped run still leaves its table
                args.out.write_text(_table(rows, args))
            print(
                f"[{n}/{len(chosen)}] {status:8s} {took:6.1f}s {m.where} {m.kind}: "
                f"{m.before} -> {m.after} {why}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = _table(rows, args)
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    return 0


def _table(rows: list, args: argparse.Namespace) -> str:
    killed = sum(1 for r in rows if r[1] != "survived")
    cmd = "python tools/mutate.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{cmd.strip()}`  ",
        f"Killed {killed} of {len(rows)} ({100 * killed / max(len(rows), 1):.0f}%); "
        f"survivors: {len(rows) - killed}.",
        "",
        "| module:line | kind | original | mutant | status | s | first failing test |",
        "|---|---|---|---|---|---:|---|",
    ]
    for m, status, took, why in rows:
        before = m.before.replace("|", "\\|")
        after = m.after.replace("|", "\\|")
        lines.append(
            f"| {m.where} | {m.kind} | `{before}` | `{after}` | {status} | {took:.0f} | {why} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
