"""`onnx2trt fix` and `onnx2trt lint` end to end, including every bad input of issue 2."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import conv_relu_model, run_ort

from onnx2trt_lib.cli.main import cli

SAMPLE = Path(str(resources.files("onnx2trt_lib") / "data" / "sample" / "digits.onnx"))


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "digits.onnx"
    path.write_bytes(SAMPLE.read_bytes())
    return path


def test_lint_fix_lint_cycle_on_sample(sample: Path, tmp_path: Path) -> None:
    before = invoke("lint", str(sample), "--target", "tensorrt-7.1", "--json")
    assert before.exit_code == 3
    rules = {f["rule"] for f in json.loads(before.output)["findings"]}
    assert rules == {"resize-scales-coordinate-mode", "gather-elements-unsupported"}

    out, report = tmp_path / "fixed.onnx", tmp_path / "report.json"
    original = sample.read_bytes()
    res = invoke(
        "fix", str(sample), "-o", str(out), "--target", "tensorrt-7.1", "--report", str(report)
    )
    assert res.exit_code == 0, res.output
    assert sample.read_bytes() == original  # input untouched
    data = json.loads(report.read_text())
    counts = {p["name"]: p["counts"] for p in data["passes"]}
    assert counts["fix-resize"]["scales_to_sizes"] == 1
    assert counts["decompose-gather-elements"]["decomposed"] == 1

    after = invoke("lint", str(out), "--target", "tensorrt-7.1")
    assert after.exit_code == 0, after.output

    images = np.load(str(SAMPLE.parent / "digits_test.npz"))["image"][:16]
    ref = run_ort(onnx.load(sample), {"image": images})[0]
    got = run_ort(onnx.load(out), {"image": images})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)

    # a second fix changes nothing and writes the same bytes
    out2 = tmp_path / "fixed2.onnx"
    res2 = invoke("fix", str(out), "-o", str(out2), "--target", "tensorrt-7.1", "--json")
    assert res2.exit_code == 0 and json.loads(res2.output)["modified"] is False
    assert out2.read_bytes() == out.read_bytes()


def test_fix_python_api_matches_cli(sample: Path) -> None:
    import onnx2trt_lib

    fixed, report = onnx2trt_lib.fix(str(sample), target="tensorrt-7.1")
    assert report.modified
    assert not onnx2trt_lib.lint(fixed, target="tensorrt-7.1")
    assert "<table>" in report._repr_html_()


def test_fix_with_explicit_passes(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.onnx"
    res = invoke("fix", str(sample), "-o", str(out), "--passes", "fold-constants,cleanup", "--json")
    assert res.exit_code == 0
    assert [p["name"] for p in json.loads(res.output)["passes"]] == ["fold-constants", "cleanup"]
    assert "GatherElements" in {n.op_type for n in onnx.load(out).graph.node}


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = tmp / "good.onnx"
    good.write_bytes(conv_relu_model().SerializeToString())
    rand = tmp / "random.onnx"
    rand.write_bytes(os.urandom(300))
    trunc = tmp / "trunc.onnx"
    data = SAMPLE.read_bytes()
    trunc.write_bytes(data[: len(data) // 3])
    broken = conv_relu_model()
    broken.graph.node[1].input[0] = "nowhere"
    bad_checker = tmp / "checker.onnx"
    bad_checker.write_bytes(broken.SerializeToString())
    folder = tmp / "folder.onnx"
    folder.mkdir()
    out = str(tmp / "out.onnx")
    return {
        "missing file": (["fix", str(tmp / "nope.onnx"), "-o", out], "no such file"),
        "directory": (["fix", str(folder), "-o", out], "directory"),
        "random bytes": (["fix", str(rand), "-o", out], "ONNX"),
        "truncated": (["fix", str(trunc), "-o", out], "ONNX"),
        "checker failure": (["fix", str(bad_checker), "-o", out], "checker"),
        "unknown target": (
            ["fix", str(good), "-o", out, "--target", "tensorrt-3"],
            "unknown target",
        ),
        "unknown pass": (
            ["fix", str(good), "-o", out, "--passes", "fold-constants,frobnicate"],
            "unknown pass",
        ),
        "output folder missing": (
            ["fix", str(good), "-o", str(tmp / "no" / "o.onnx")],
            "does not exist",
        ),
        "output is input": (["fix", str(good), "-o", str(good)], "same file"),
        "lint missing": (["lint", str(tmp / "nope.onnx")], "no such file"),
        "lint unknown target": (["lint", str(good), "--target", "nope"], "unknown target"),
    }


BAD_CASES = [
    "missing file",
    "directory",
    "random bytes",
    "truncated",
    "checker failure",
    "unknown target",
    "unknown pass",
    "output folder missing",
    "output is input",
    "lint missing",
    "lint unknown target",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_line_error_and_writes_nothing(tmp_path: Path, case: str) -> None:
    args, message = _bad_inputs(tmp_path)[case]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    res = CliRunner().invoke(cli, args)
    assert res.exit_code in (1, 2), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output
    assert "Traceback" not in res.output
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # no output, no temp file, inputs unchanged


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    good = tmp_path / "good.onnx"
    good.write_bytes(conv_relu_model().SerializeToString())
    assert (
        CliRunner()
        .invoke(cli, ["fix", str(good), "-o", str(tmp_path / "o.onnx"), "--target", "x"])
        .exit_code
        == 2
    )
    assert CliRunner().invoke(cli, ["fix", str(good)]).exit_code == 2  # missing -o


def test_fix_unchanged_external_data_model_writes_its_weights(tmp_path: Path) -> None:
    """A model whose weights sit in a .data file and that needs no change: the output still holds them.

    Copying the .onnx bytes as they are would leave the output pointing at a data file that
    is not beside it (and that the output never owns).
    """
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((1, 2, 8, 12)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Relu", ["x"], ["a"]),
            onnx.helper.make_node("Add", ["a", "w"], ["y"]),
        ],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 8, 12])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 8, 12])],
        initializer=[onnx.numpy_helper.from_array(weight, "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    source, out = tmp_path / "src" / "m.onnx", tmp_path / "out" / "fixed.onnx"
    stored = onnx.ModelProto()
    stored.CopyFrom(
        model
    )  # onnx.save turns the model it is given into references to the .data file
    onnx.save(stored, str(source), save_as_external_data=True, location="m.data", size_threshold=64)
    res = invoke("fix", str(source), "-o", str(out), "--passes", "cleanup", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["modified"] is False, res.output
    fixed = onnx.load(
        str(out)
    )  # from its own folder: nothing of src/ is reachable by a relative path
    onnx.checker.check_model(fixed, full_check=True)
    x = rng.standard_normal((1, 2, 8, 12)).astype(np.float32)
    np.testing.assert_array_equal(run_ort(fixed, {"x": x})[0], run_ort(model, {"x": x})[0])
