"""`onnx2trt quickstart`: the README's main job, checked as a new user would read its output."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from onnx2trt_lib.calib.cache import read_cache
from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.compat import lint_model


@pytest.mark.slow
def test_quickstart_writes_every_artifact(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    res = CliRunner().invoke(cli, ["quickstart", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert len(summary["findings_before"]) == 2 and summary["findings_after"] == []
    acc = summary["accuracy"]
    assert acc["fp32"] > 0.95
    assert acc["fixed"] == acc["fp32"]
    assert abs(acc["fp16"] - acc["fp32"]) <= 0.005
    assert acc["fp32"] - acc["int8"] <= 0.01
    artifacts = {k: Path(v) for k, v in summary["artifacts"].items()}
    for path in artifacts.values():
        assert path.is_file() and path.stat().st_size > 0
    cache = read_cache(artifacts["calibration cache"])
    assert len(cache.scales) == summary["calibrated_tensors"] > 0
    assert all(0 < s < float("inf") for s in cache.scales.values())
    assert not lint_model(onnx.load(artifacts["fixed model"]), "tensorrt-7.1")
    int8_ops = {n.op_type for n in onnx.load(artifacts["INT8 Q/DQ model"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= int8_ops
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError:
        assert summary["engine"] is None and "tensorrt-rtx" in summary["engine_note"]
    else:
        assert Path(summary["engine"]).is_file() and (out / "digits_int8.engine.json").is_file()
        assert summary["next_steps"][0].startswith(f"onnx2trt inspect {summary['engine']}")
    # what a person reads: a title first, then what was written where, then what to do next
    text = CliRunner().invoke(cli, ["quickstart", "--out", str(out)])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].startswith("onnx2trt quickstart: ") and str(out) in lines[0]
    wrote = lines.index("wrote")
    for path in artifacts.values():
        assert any(str(path) in line for line in lines[wrote:])
    after = lines[lines.index("next:") + 1 :]
    assert [line.strip() for line in after[: len(summary["next_steps"])]] == summary["next_steps"]
    assert any("onnx2trt calibrate model_fixed.onnx --data" in line for line in after)


def test_quickstart_refuses_a_file_as_folder(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    res = CliRunner().invoke(cli, ["quickstart", "--out", str(target)])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_calibrate_qdq_writes_a_quantized_model(tmp_path: Path) -> None:
    from onnx2trt_lib.quickstart import sample_dir

    sample = sample_dir()
    cache, qdq = tmp_path / "d.cache", tmp_path / "d_int8.onnx"
    res = CliRunner().invoke(
        cli,
        [
            "calibrate",
            str(sample / "digits.onnx"),
            "--data",
            str(sample / "calib_list.txt"),
            "--preprocess",
            str(sample / "preprocess.json"),
            "-o",
            str(cache),
            "--qdq",
            str(qdq),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert payload["qdq"]["path"] == str(qdq)
    model = onnx.load(qdq)
    q_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    scales = read_cache(cache).scales
    assert "image" in q_inputs and q_inputs <= set(scales) | {
        i.name for i in model.graph.initializer
    }


def test_calibrate_plots_the_most_clipped_tensors(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    from onnx2trt_lib.quickstart import sample_dir

    sample = sample_dir()
    args = [
        "calibrate",
        str(sample / "digits.onnx"),
        "--data",
        str(sample / "calib_list.txt"),
        "--preprocess",
        str(sample / "preprocess.json"),
        "-o",
        str(tmp_path / "d.cache"),
    ]
    res = CliRunner().invoke(
        cli, [*args, "--plots", str(tmp_path / "plots"), "--plots-top", "2", "--json"]
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    plots = [Path(p) for p in payload["plots"]]
    assert len(plots) == 2 and all(p.parent == tmp_path / "plots" for p in plots)
    for p in plots:
        with Image.open(p) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert plots[0].name.startswith("01_") and plots[1].name.startswith("02_")
    # a cache hit has no histograms: asking for plots then is a clear usage error
    again = CliRunner().invoke(cli, [*args, "--plots", str(tmp_path / "plots2")])
    assert again.exit_code == 2 and "--force" in again.output
