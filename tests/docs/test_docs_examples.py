"""Every example in README.md and docs/**/*.md runs: docs that drift from the code fail here.

Per markdown file, in document order, in one fresh temp folder (holding a copy of the
bundled sample as ./sample/):
- ```python blocks run in-process, sharing one namespace per file;
- ```bash / ```console / ```sh blocks run their lines that start with `onnx2trt ` (a leading
  `$ ` is dropped; a trailing backslash continues the line) with the venv's `onnx2trt`,
  and must exit 0 unless the block is preceded by `<!-- expect-exit: N -->`.
README.md runs in an empty folder instead: its example must work as pasted anywhere (it finds
the sample through `onnx2trt_lib.sample_dir()`), the repository root included.
A block preceded by `<!-- docs-test: skip -->` is not run (for install commands and
GPU-only code only). Blocks of other languages (text, json, ...) are never run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "console", "sh", "shell"}
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_DIRECTIVE = re.compile(r"^<!--\s*(docs-test:\s*skip|expect-exit:\s*(\d+))\s*-->$")
# files whose examples take more than ~10 s on a busy 2-core machine
SLOW_FILES = {"docs/getting-started.md", "docs/calibration.md", "README.md"}


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    skip: bool = False
    expect_exit: int = 0

    @property
    def commands(self) -> list[str]:
        """The `onnx2trt ...` command lines of a shell block (continuations joined)."""
        joined: list[str] = []
        pending = ""
        for raw in self.code.splitlines():
            line = raw.rstrip()
            if pending:
                line = pending + " " + line.lstrip()
                pending = ""
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
                continue
            joined.append(line)
        if pending:
            joined.append(pending)
        out = []
        for line in joined:
            text = line.strip()
            if text.startswith("$ "):
                text = text[2:].lstrip()
            if text.startswith("onnx2trt "):
                out.append(text)
        return out

    @property
    def runnable(self) -> bool:
        if self.skip:
            return False
        if self.lang in PYTHON_LANGS:
            return True
        return self.lang in SHELL_LANGS and bool(self.commands)


def parse_blocks(text: str) -> list[Block]:
    """Fenced code blocks with the directives (HTML comments) on the lines just before them."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, lang = match.group(2), match.group(3).lower()
        skip, expect = False, 0
        j = i - 1
        while j >= 0 and lines[j].strip() and (d := _DIRECTIVE.match(lines[j].strip())):
            if d.group(2) is not None:
                expect = int(d.group(2))
            else:
                skip = True
            j -= 1
        body = []
        k = i + 1
        while k < len(lines) and not lines[k].strip().startswith(fence[0] * len(fence)):
            body.append(lines[k])
            k += 1
        indent = len(match.group(1))
        code = "\n".join(line[indent:] if line[:indent].isspace() else line for line in body)
        blocks.append(Block(lang, code + "\n", i + 1, skip, expect))
        i = k + 1
    return blocks


def markdown_files() -> list[Path]:
    found = [ROOT / "README.md"] if (ROOT / "README.md").is_file() else []
    found += sorted((ROOT / "docs").rglob("*.md"))
    return found


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _params() -> list:
    params = []
    for path in markdown_files():
        rel = _relative(path)
        marks = [pytest.mark.slow] if rel in SLOW_FILES else []
        params.append(pytest.param(path, id=rel, marks=marks))
    return params


def _onnx2trt_bin() -> Path:
    candidate = Path(sys.executable).with_name("onnx2trt")
    if candidate.is_file():
        return candidate.parent
    found = shutil.which("onnx2trt")
    if found is None:
        pytest.fail(
            "the onnx2trt console script is not installed in this environment (pip install -e .)"
        )
    return Path(found).parent


@pytest.fixture
def docs_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sample = files("onnx2trt_lib") / "data" / "sample"
    shutil.copytree(str(sample), tmp_path / "sample")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(
        "ONNX2TRT_CACHE_DIR", str(tmp_path / "engine-cache")
    )  # never the user's cache
    return tmp_path


def _run_shell(block: Block, path: Path, workdir: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{_onnx2trt_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "120",
    }
    for command in block.commands:
        proc = subprocess.run(
            ["bash", "-c", command],
            check=False,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == block.expect_exit, (
            f"{_relative(path)}:{block.line}: `{command}` exited {proc.returncode}, expected {block.expect_exit}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )


def _run_python(block: Block, path: Path, namespace: dict) -> None:
    code = compile(block.code, f"{_relative(path)}:{block.line}", "exec")
    try:
        exec(code, namespace)  # noqa: S102 - running the docs' own examples is the point
    except Exception as exc:
        raise AssertionError(
            f"{_relative(path)}:{block.line}: python block failed: {type(exc).__name__}: {exc}"
        ) from exc


@pytest.mark.parametrize("path", _params())
def test_markdown_examples_run(path: Path, docs_workdir: Path) -> None:
    blocks = [b for b in parse_blocks(path.read_text(encoding="utf-8")) if b.runnable]
    if not blocks:
        pytest.skip(f"{_relative(path)} has no runnable examples")
    if path.name == "README.md":  # as pasted by a new user: no ./sample beside it
        shutil.rmtree(docs_workdir / "sample")
    namespace: dict = {"__name__": "__docs__"}
    try:
        for block in blocks:
            if block.lang in PYTHON_LANGS:
                _run_python(block, path, namespace)
            else:
                _run_shell(block, path, docs_workdir)
    finally:
        if "matplotlib.pyplot" in sys.modules:  # blocks may open figures
            sys.modules["matplotlib.pyplot"].close("all")


# ---------------------------------------------------------------- the parser itself

_SAMPLE_MD = """\
# Title

```python
x = 1
```

<!-- docs-test: skip -->
```bash
pip install onnx2trt_lib
```

<!-- expect-exit: 3 -->
```console
$ onnx2trt lint model.onnx \\
    --target tensorrt-7.1
echo not run
```

```text
onnx2trt not-a-command-block
```

- a list item with an indented block:

  ```python
  y = x + 1
  ```
"""


def test_parser_finds_blocks_directives_and_commands() -> None:
    blocks = parse_blocks(_SAMPLE_MD)
    assert [(b.lang, b.line, b.skip, b.expect_exit) for b in blocks] == [
        ("python", 3, False, 0),
        ("bash", 8, True, 0),
        ("console", 13, False, 3),
        ("text", 19, False, 0),
        ("python", 25, False, 0),
    ]
    assert blocks[2].commands == ["onnx2trt lint model.onnx --target tensorrt-7.1"]
    assert [b.runnable for b in blocks] == [True, False, True, False, True]
    assert blocks[4].code == "y = x + 1\n"


def test_every_docs_page_is_collected() -> None:
    rel = {_relative(p) for p in markdown_files()}
    for page in (
        "docs/index.md",
        "docs/getting-started.md",
        "docs/calibration.md",
        "docs/tensorrt-versions.md",
        "docs/cli.md",
        "docs/api.md",
        "docs/passes/fix-resize.md",
    ):
        assert page in rel


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", _params())
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link and image in the page points to a file that exists."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # links inside code are not links
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert not broken, f"{_relative(path)}: links to missing files: {broken}"
