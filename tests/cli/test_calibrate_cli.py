"""`onnx2trt calibrate` and `onnx2trt inspect` through the real CLI group (CliRunner)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from onnx2trt_lib.cli import main as cli_main


@pytest.fixture
def run(monkeypatch):
    # registered by the lead in cli/main.py; setitem keeps this test valid before and after
    monkeypatch.setitem(cli_main.SUBCOMMANDS, "calibrate", "calibrate_cmd")
    monkeypatch.setitem(cli_main.SUBCOMMANDS, "inspect", "inspect_cmd")

    def invoke(*args: str):
        return CliRunner().invoke(cli_main.cli, [str(a) for a in args], obj={})

    return invoke


@pytest.fixture(scope="module")
def det_model() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("rapidocr-onnxruntime is not installed")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "models" / "ch_PP-OCRv4_det_infer.onnx"
    )
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs")
    from sklearn.datasets import load_sample_images

    for index, array in enumerate(load_sample_images().images):
        Image.fromarray(array).resize((64, 48)).save(folder / f"photo{index}.jpg")
    card = Image.new("L", (80, 40), 230)
    ImageDraw.Draw(card).text((4, 12), "onnx2trt", fill=20)
    card.save(folder / "card.png")
    (folder / "list.txt").write_text("photo0.jpg\nphoto1.jpg\ncard.png\n")
    return folder


def test_calibrate_writes_cache_ranges_and_reuses(run, det_model, images, tmp_path):
    out, ranges = tmp_path / "det.cache", tmp_path / "det.json"
    args = [
        "calibrate",
        det_model,
        "--data",
        images / "list.txt",
        "-o",
        out,
        "--shape",
        "x:1x3x32x32",
        "--preprocess",
        "paddleocr",
        "--ranges",
        ranges,
        "--trt-version",
        "8.6.1",
    ]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "tensors (entropy, two-pass) from 3 samples" in first.output
    assert out.read_text().startswith("TRT-8601-EntropyCalibration2\n")
    doc = json.loads(ranges.read_text())
    assert doc["method"] == "entropy" and set(doc["tensors"]) == set(
        line.split(": ")[0] for line in out.read_text().splitlines()[1:]
    )
    second = run(*args)
    assert second.exit_code == 0 and "up to date" in second.output
    forced = run(*args, "--force", "--json")
    payload = json.loads(forced.output)
    assert forced.exit_code == 0 and payload["cache_hit"] is False and payload["num_samples"] == 3

    shown = run("inspect", out)
    assert (
        shown.exit_code == 0
        and "TRT-8601-EntropyCalibration2" in shown.output
        and "conv2d" in shown.output
    )
    as_json = json.loads(run("inspect", out, "--json").output)
    assert (
        as_json["kind"] == "calibration-cache" and len(as_json["tensors"]) == payload["num_tensors"]
    )
    assert all(t["scale"] > 0 for t in as_json["tensors"])
    assert run("inspect", ranges).exit_code == 0


def test_qdq_scope_writes_only_the_inputs_qdq_quantizes(run, det_model, images, tmp_path):
    common = [
        "--data",
        images / "list.txt",
        "--shape",
        "x:1x3x32x32",
        "--preprocess",
        "paddleocr",
        "--json",
    ]
    full = json.loads(run("calibrate", det_model, "-o", tmp_path / "all.cache", *common).output)
    out, qdq_model = tmp_path / "qdq.cache", tmp_path / "det.qdq.onnx"
    result = run(
        "calibrate",
        det_model,
        "-o",
        out,
        "--scope",
        "qdq",
        "--qdq",
        qdq_model,
        "--no-protect",
        *common,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    # the det model: every Conv input plus the residual Adds, far fewer than every activation
    assert 0 < payload["num_tensors"] < full["num_tensors"] // 2
    assert set(payload["tensors"]) <= set(full["tensors"])
    import onnx

    graph = onnx.load(str(qdq_model)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    # the scope's ranges are enough: every Conv reads a dequantized activation and weight
    assert convs and all(
        producer.get(n.input[0]) == producer.get(n.input[1]) == "DequantizeLinear" for n in convs
    )


def test_percentile_method_option_and_state(run, det_model, images, tmp_path):
    out, state = tmp_path / "p.cache", tmp_path / "p.npz"
    result = run(
        "calibrate",
        det_model,
        "-d",
        images,
        "-o",
        out,
        "--shape",
        "x:1x3x32x32",
        "--method",
        "percentile",
        "--method-option",
        "percentile=99.9",
        "--save-state",
        state,
        "--quiet",
    )
    assert result.exit_code == 0 and result.output == "" and state.is_file()
    merged = run(
        "calibrate",
        det_model,
        "-d",
        images / "photo0.jpg",
        "-o",
        tmp_path / "m.cache",
        "--shape",
        "x:1x3x32x32",
        "--add-state",
        state,
        "--json",
    )
    assert merged.exit_code == 0, merged.output
    assert json.loads(merged.output)["num_samples"] == 4  # 3 saved + 1 new


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        ([], 2, "dynamic shape"),
        (["--shape", "x:1x3x32"], 2, "has 3 dims"),
        (["--shape", "x:1x3x32x32", "--preprocess", "nope"], 2, "neither a preset"),
        (["--shape", "x:1x3x32x32", "--method-option", "pct"], 2, "KEY=VALUE"),
    ],
)
def test_usage_errors_are_one_line(run, det_model, images, tmp_path, extra, code, message):
    out = tmp_path / "x.cache"
    result = run("calibrate", det_model, "--data", images / "list.txt", "-o", out, *extra)
    assert result.exit_code == code
    assert (
        message in result.output
        and result.output.count("\n") == 1
        and "Traceback" not in result.output
    )
    assert not out.exists()


def test_data_errors_name_the_images(run, det_model, images, tmp_path):
    (tmp_path / "list.txt").write_text(f"{images / 'photo0.jpg'}\nmissing.jpg\n")
    out = tmp_path / "x.cache"
    result = run(
        "calibrate", det_model, "--data", tmp_path / "list.txt", "-o", out, "--shape", "x:1x3x32x32"
    )
    assert (
        result.exit_code == 1
        and str(tmp_path / "missing.jpg") in result.output
        and not out.exists()
    )
    (tmp_path / "empty.txt").write_text("")
    result = run(
        "calibrate",
        det_model,
        "--data",
        tmp_path / "empty.txt",
        "-o",
        out,
        "--shape",
        "x:1x3x32x32",
    )
    assert result.exit_code == 1 and "empty" in result.output
    nan = np.full((1, 3, 32, 32), np.inf, np.float32)
    np.save(tmp_path / "inf.npy", nan)
    result = run("calibrate", det_model, "--data", tmp_path / "inf.npy", "-o", out)
    assert result.exit_code == 1 and "tensor 'x' has NaN or Inf" in result.output
    result = run("calibrate", tmp_path / "nomodel.onnx", "--data", images, "-o", out)
    assert result.exit_code == 1 and "no such file" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "inf.npy", "list.txt"]


def test_inspect_corrupt_cache_gives_line_number(run, tmp_path):
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-8001-EntropyCalibration2\nconv: 3c010204\nrelu: zzzz\n")
    result = run("inspect", bad)
    assert result.exit_code == 1 and f"{bad}:3:" in result.output and result.output.count("\n") == 1
    (tmp_path / "other.bin").write_bytes(b"\x00\x01")
    assert run("inspect", tmp_path / "other.bin").exit_code == 2


@pytest.mark.parametrize("name", ["calibrate", "inspect"])
def test_help_needs_no_heavy_modules(name):
    code = (
        "import builtins\nreal = builtins.__import__\n"
        "def guard(n, *a, **k):\n"
        "    if n.split('.')[0] in ('tensorrt','tensorrt_rtx','cuda','numba','onnxruntime','torch','matplotlib'):\n"
        "        raise ImportError('blocked ' + n)\n"
        "    return real(n, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "from onnx2trt_lib.cli import main\n"
        f"main.SUBCOMMANDS[{name!r}] = {name + '_cmd'!r}\n"
        f"main.cli([{name!r}, '--help'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_inspect_real_tensorrt_cache(run, shared_dir):
    path = (
        shared_dir
        / "data"
        / "trt_caches"
        / "mlperf_v0.5_nvidia_gnmt_TRT-6001-MinMaxCalibration.cache"
    )
    if not path.is_file():
        pytest.skip(f"{path} absent")
    result = run("inspect", path, "--json")
    payload = json.loads(result.output)
    assert (
        result.exit_code == 0
        and payload["algorithm"] == "MinMaxCalibration"
        and payload["version"] == "6001"
    )
    rows = {row["tensor"]: row for row in payload["tensors"]}
    assert rows["Query Embedding Indices"]["hex"] == "43810204"
    assert rows["Query Embedding Indices"]["amax"] == pytest.approx(258.0157 * 127, rel=1e-5)
