"""Bad input to `onnx2trt ncnn`: one-line errors, non-zero exit, nothing written."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnx2trt_lib.cli.main import cli


def _invoke(args):
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_missing_pnnx(digits_files, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pnnx" else real(name, *a)
    )
    model, calib, _ = digits_files
    code, out = _invoke(["ncnn", str(model), "--data", str(calib), "-o", str(tmp_path / "o")])
    assert code != 0 and "pip install 'pnnx'" in out and "onnx2trt_lib[ncnn]" in out
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_model_pnnx_cannot_convert(digits_files, tmp_path):
    """A custom-domain op that pnnx has no converter for."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])
    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "x.npy", np.ones((2, 1, 8, 8), np.float32))
    code, out = _invoke(
        ["ncnn", str(path), "--data", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o")]
    )
    assert code != 0 and out.startswith("error: pnnx could not convert") and "Mystery" in out, out
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_layer_that_cannot_be_mapped(digits_files, tmp_path, monkeypatch):
    """Every ONNX tensor but the inputs hidden: the second conv's input matches nothing."""
    from onnx2trt_lib.ncnn import mapping

    real = mapping.onnx_values
    monkeypatch.setattr(
        mapping,
        "onnx_values",
        lambda model, feeds: {k: v for k, v in real(model, feeds).items() if k in feeds},
    )
    model, calib, _ = digits_files
    code, out = _invoke(["ncnn", str(model), "--data", str(calib), "-o", str(tmp_path / "o")])
    assert code != 0 and "matches no ONNX tensor" in out and "convrelu_1" in out, out
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_output_is_a_file(digits_files, tmp_path):
    model, calib, _ = digits_files
    (tmp_path / "o").write_text("x")
    code, out = _invoke(["ncnn", str(model), "--data", str(calib), "-o", str(tmp_path / "o")])
    assert code != 0 and "is not a folder" in out and len(out.strip().splitlines()) == 1
    assert (tmp_path / "o").read_text() == "x"


def test_existing_outputs_untouched_on_failure(digits_files, tmp_path, monkeypatch):
    from onnx2trt_lib.ncnn import mapping

    monkeypatch.setattr(mapping, "RTOL", -1.0)  # nothing can match
    model, calib, _ = digits_files
    out = tmp_path / "o"
    out.mkdir()
    (out / "digits.param").write_text("old")
    code, _ = _invoke(["ncnn", str(model), "--data", str(calib), "-o", str(out)])
    assert code != 0 and (out / "digits.param").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["digits.param"]
