"""`onnx2trt inspect` on engines (their sidecar, no TensorRT needed) and on names with brackets."""

from __future__ import annotations

import hashlib
import json

import onnx
import pytest
from click.testing import CliRunner
from helpers import conv_relu_model

from onnx2trt_lib.cli import main as cli_main


@pytest.fixture
def run(monkeypatch):
    monkeypatch.setitem(cli_main.SUBCOMMANDS, "inspect", "inspect_cmd")

    def invoke(*args):
        return CliRunner().invoke(cli_main.cli, [str(a) for a in args], obj={})

    return invoke


def _hand_made_engine(tmp_path, name: str = "m.engine"):
    """An engine file and the sidecar onnx2trt would write beside it (the bytes are never deserialized)."""
    data = b"ftrt" + bytes(256)
    path = tmp_path / name
    path.write_bytes(data)
    sidecar = {
        "format": "onnx2trt-engine",
        "format_version": 1,
        "backend": {"name": "tensorrt", "module": "tensorrt", "version": "10.8.0.43"},
        "target": "ampere-plus",
        "inputs": [{"name": "images[0]", "dtype": "float16", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 1000]}],
        "profiles": [
            [
                {
                    "name": "images[0]",
                    "min": [1, 3, 224, 224],
                    "opt": [8, 3, 224, 224],
                    "max": [32, 3, 224, 224],
                }
            ],
            [
                {
                    "name": "images[0]",
                    "min": [33, 3, 224, 224],
                    "opt": [64, 3, 224, 224],
                    "max": [64, 3, 224, 224],
                }
            ],
        ],
        "config": {"fp16": True, "int8": False, "version_compatible": True},
        "onnx_sha256": "ab" * 32,
        "onnx_source": "model.onnx",
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "engine_size": len(data),
        "created": "2026-01-01T00:00:00+00:00",
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
    return path


def test_inspect_engine_shows_the_sidecar(run, tmp_path):
    engine = _hand_made_engine(tmp_path)
    result = run("inspect", engine)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{engine}: TensorRT engine, 260 bytes" in out
    assert "built with tensorrt 10.8.0.43, target ampere-plus, fp16, version-compatible" in out
    assert "input  images[0]  float16  ?x3x224x224" in out
    assert "profile 0: images[0]:1x3x224x224/8x3x224x224/32x3x224x224" in out
    assert "profile 1: images[0]:33x3x224x224/64x3x224x224/64x3x224x224" in out
    assert "engine not loaded here" in out and "not a file onnx2trt can inspect" not in out
    as_json = json.loads(
        run("inspect", tmp_path / "m.engine.json", "--json").output
    )  # the sidecar stands for it
    assert as_json["kind"] == "engine" and as_json["path"] == str(engine)
    assert (
        as_json["sidecar"]["backend"]["version"] == "10.8.0.43"
        and len(as_json["sidecar"]["profiles"]) == 2
    )


def test_inspect_engine_built_by_tensorrt_rtx(run, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx")
    from onnx2trt_lib.build import BuildConfig, Builder, profiles_from_specs

    model = tmp_path / "m.onnx"
    onnx.save(conv_relu_model(batch="N"), str(model))
    config = BuildConfig(profiles=profiles_from_specs(["x:1x3x8x8/2x3x8x8/4x3x8x8"]))
    result = Builder(config, cache_dir=False).build(model, tmp_path / "m.engine")
    shown = run("inspect", result.path)
    assert shown.exit_code == 0, shown.output
    assert (
        f"built with tensorrt-rtx {result.backend.version}, target portable, fp32" in shown.output
    )
    assert "profile 0: x:1x3x8x8/2x3x8x8/4x3x8x8" in shown.output
    assert "engine loads here" in shown.output or "engine not loaded here" in shown.output


def test_missing_engine_beside_a_sidecar_is_one_line(run, tmp_path):
    engine = _hand_made_engine(tmp_path)
    engine.unlink()
    result = run("inspect", tmp_path / "m.engine.json")
    assert (
        result.exit_code != 0
        and "no such engine file" in result.output
        and "Traceback" not in result.output
    )


def test_brackets_in_names_are_shown_as_text(run, tmp_path):
    cache = tmp_path / "o[red]ut.cache"
    cache.write_text(
        "TRT-8601-EntropyCalibration2\nblock[i]/out: 3c010204\n[bold]x[/bold]: 3c010204\n"
    )
    result = run("inspect", cache)
    assert result.exit_code == 0, result.output
    assert "block[i]/out" in result.output and "[bold]x[/bold]" in result.output
    assert f"{cache}: TensorRT calibration cache" in result.output
