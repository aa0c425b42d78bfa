"""A newcomer's first minutes, scripted: `pip install -e .` into a fresh venv, then the flat API
on the bundled sample and the CLI with trtexec's and Polygraphy's shape spellings.

The venv is new and the package is installed by pip from this checkout (build backend, entry
point, package data, the README's example as pasted). The dependencies come from the test
environment through a .pth file, so the test needs no download beyond pip's build requirements
(cached by pip after the first run); ONNX2TRT_NEWCOMER_FULL=1 resolves every dependency from
PyPI instead. Without a network and an empty pip cache it skips.
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def newcomer_venv(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("newcomer")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    full = os.environ.get("ONNX2TRT_NEWCOMER_FULL") == "1"
    if not full:  # the test environment's packages stand in for the dependencies
        purelib = _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        )
        Path(purelib.stdout.strip(), "deps-from-test-env.pth").write_text(
            "\n".join(site.getsitepackages()) + "\n"
        )
    install = _run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-e", str(ROOT)],
        env={**os.environ, "PIP_NO_INPUT": "1", "PYTHONPATH": ""},
    )
    if install.returncode != 0:
        tail = install.stderr.strip().splitlines()[-3:]
        offline = re.search(
            r"(?i)connection|network|resolve|No matching distribution", install.stderr
        )
        if offline:
            pytest.skip(f"pip could not reach PyPI (offline, nothing cached): {' / '.join(tail)}")
        pytest.fail(f"pip install -e . failed:\n{install.stderr[-3000:]}")
    return env_dir


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["ONNX2TRT_CACHE_DIR"] = str(tmp / "engine-cache")
    env["MPLBACKEND"] = "Agg"
    return env


def test_pip_install_then_the_readme_example_runs(newcomer_venv: Path, tmp_path: Path) -> None:
    python = newcomer_venv / "bin" / "python"
    where = _run(
        [str(python), "-c", "import onnx2trt_lib; print(onnx2trt_lib.__file__)"],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
    )
    assert where.returncode == 0 and where.stdout.startswith(str(ROOT / "src")), where.stderr
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## In Python.*?```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "readme_example.py").write_text(code)
    run = _run([str(python), "readme_example.py"], cwd=tmp_path, env=_clean_env(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "INT8 vs FP32: cosine" in run.stdout
    assert (tmp_path / "digits_int8.engine").is_file() or "tensorrt" not in run.stdout


def test_console_script_shape_spellings_give_one_sidecar(
    newcomer_venv: Path, tmp_path: Path
) -> None:
    onnx2trt = newcomer_venv / "bin" / "onnx2trt"
    env = _clean_env(tmp_path)
    version = _run([str(onnx2trt), "--version"], env=env)
    assert version.returncode == 0 and "onnx2trt" in version.stdout
    sample = _run(
        [
            str(newcomer_venv / "bin" / "python"),
            "-c",
            "import onnx2trt_lib as o; print(o.sample_dir())",
        ],
        env=env,
    )
    model = str(Path(sample.stdout.strip()) / "digits.onnx")
    if _run(
        [str(newcomer_venv / "bin" / "python"), "-c", "import tensorrt_rtx"], env=env
    ).returncode:
        pytest.skip("no TensorRT-RTX in this environment")
    spellings = {
        "shapes": ["--shapes", "image:1x1x8x8/8x1x8x8/32x1x8x8"],
        "trtexec": [
            "--minShapes=image:1x1x8x8",
            "--optShapes=image:8x1x8x8",
            "--maxShapes=image:32x1x8x8",
        ],
        "polygraphy": [
            "--trt-min-shapes",
            "image:[1,1,8,8]",
            "--trt-opt-shapes",
            "image:[8,1,8,8]",
            "--trt-max-shapes",
            "image:[32,1,8,8]",
        ],
    }
    sidecars = {}
    for name, flags in spellings.items():
        engine = tmp_path / f"{name}.engine"
        built = _run(
            [str(onnx2trt), "build", model, "-o", str(engine), *flags, "--no-engine-cache"], env=env
        )
        assert built.returncode == 0, built.stderr
        sidecar = json.loads(Path(f"{engine}.json").read_text())
        for volatile in ("created", "engine_sha256"):
            sidecar.pop(volatile, None)
        sidecars[name] = sidecar
    assert sidecars["trtexec"] == sidecars["shapes"] == sidecars["polygraphy"]
