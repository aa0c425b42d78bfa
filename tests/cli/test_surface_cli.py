"""The CLI as TensorRT users type it: trtexec's and Polygraphy's shape spellings, one --shapes
everywhere, stated targets, inspect MODEL.onnx, fix --set-dim/--rename-dim, one data handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import onnx2trt_lib as o2t
from onnx2trt_lib.build.config import parse_profile, parse_shapes, profiles_from_specs
from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.errors import UsageError

SAMPLE = o2t.sample_dir()
MODEL = SAMPLE / "digits.onnx"


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _rapidocr(name: str) -> Path:
    pytest.importorskip("rapidocr_onnxruntime")
    import rapidocr_onnxruntime

    path = Path(rapidocr_onnxruntime.__file__).parent / "models" / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this rapidocr wheel")
    return path


# ---------------------------------------------------------------- shape spellings


def test_polygraphy_brackets_equal_trtexec_dims() -> None:
    assert parse_shapes("x:[1,3,224,224] y:[2, 4]") == parse_shapes("x:1x3x224x224,y:2x4")
    assert parse_shapes("'in:0':[4],b:[]") == {"in:0": (4,), "b": ()}
    assert parse_profile("x:[1,3]/[4,3]/[8,3]") == parse_profile("x:1x3/4x3/8x3")
    for bad in ("x:[1,-3]", "x:[1;3]", "x:[1,3", "x:1,3"):
        with pytest.raises(UsageError):
            parse_shapes(bad)


def test_min_opt_max_triples_equal_one_shapes_profile() -> None:
    ours = profiles_from_specs(["x:1x3/4x3/8x3,y:2/2/2"])
    trtexec = profiles_from_specs((), ["x:1x3,y:2"], ["x:4x3,y:2"], ["x:8x3,y:2"])
    polygraphy = profiles_from_specs((), ["x:[1,3] y:[2]"], ["x:[4,3] y:[2]"], ["x:[8,3] y:[2]"])
    assert ours == trtexec == polygraphy


def _sidecar(path: Path) -> dict:
    """The sidecar less what differs between two builds of one config (time, plan bytes)."""
    data = json.loads(Path(f"{path}.json").read_text())
    data.pop("created", None)
    data.pop("engine_sha256", None)
    return data


@pytest.mark.trt
def test_trtexec_and_polygraphy_spellings_build_the_same_engine(tmp_path, monkeypatch) -> None:
    """Real TensorRT-RTX builds of the sample: the three spellings give one sidecar."""
    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(tmp_path / "cache"))
    spellings = {
        "ours": ["--shapes", "image:1x1x8x8/8x1x8x8/32x1x8x8"],
        "trtexec": [
            "--minShapes=image:1x1x8x8",
            "--optShapes=image:8x1x8x8",
            "--maxShapes=image:32x1x8x8",
        ],
        # Polygraphy's flags before the model: its entries must not swallow MODEL
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
        args = [*flags, MODEL, "-o", engine, "--no-engine-cache", "--json"]
        result = invoke("build", *args)
        assert result.exit_code == 0, result.output
        sidecars[name] = _sidecar(engine)
    assert sidecars["ours"]["profiles"] == [
        [{"name": "image", "min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [32, 1, 8, 8]}]
    ]
    assert sidecars["trtexec"] == sidecars["ours"] == sidecars["polygraphy"]
    # one build config: with the engine cache on, the other spellings are cache hits
    first = invoke("build", MODEL, "-o", tmp_path / "c0.engine", *spellings["ours"], "--json")
    assert json.loads(first.output)["cache_hit"] is False
    for name in ("trtexec", "polygraphy"):
        args = [*spellings[name], MODEL, "-o", tmp_path / f"c-{name}.engine", "--json"]
        assert json.loads(invoke("build", *args).output)["cache_hit"] is True, name
    # trtexec's --shapes with one shape: a fixed profile
    fixed = tmp_path / "fixed.engine"
    result = invoke("build", MODEL, "-o", fixed, "--shapes", "image:4x1x8x8", "--no-engine-cache")
    assert result.exit_code == 0, result.output
    (profile,) = _sidecar(fixed)["profiles"]
    assert profile[0]["min"] == profile[0]["opt"] == profile[0]["max"] == [4, 1, 8, 8]


def test_shapes_and_old_shape_spelling_are_one_option(tmp_path) -> None:
    """calibrate/quantize/compare: --shapes, with --shape kept as an alias."""
    for command in ("calibrate", "quantize", "compare"):
        text = invoke(command, "--help").output
        assert "--shapes, --shape" in text, command
    caches = []
    for spelling in ("--shapes", "--shape"):
        out = tmp_path / f"{spelling.strip('-')}.cache"
        result = invoke(
            "calibrate",
            MODEL,
            "--data",
            SAMPLE / "calib_list.txt",
            "-p",
            SAMPLE / "preprocess.json",
            spelling,
            "image:[4,1,8,8]",
            "-o",
            out,
            "-q",
        )
        assert result.exit_code == 0, result.output
        caches.append(out.read_text())
    assert caches[0] == caches[1]


# ---------------------------------------------------------------- targets


def test_lint_and_fix_print_the_target_they_use(tmp_path) -> None:
    from onnx2trt_lib.compat.targets import default_target

    name, why = default_target()
    lint = invoke("lint", MODEL)
    assert lint.output.splitlines()[0] == f"target: {name} ({why})"
    fix = CliRunner().invoke(cli, ["fix", str(MODEL), "-o", str(tmp_path / "f.onnx")])
    assert fix.exit_code == 0 and f"target: {name} ({why})" in fix.output
    explicit = invoke("lint", MODEL, "--target", "7.1")
    assert explicit.output.splitlines()[0] == "target: tensorrt-7.1 (--target)"
    assert explicit.exit_code == 3
    payload = json.loads(invoke("fix", MODEL, "-o", tmp_path / "g.onnx", "--json").output)
    assert payload["target"] == name


# ---------------------------------------------------------------- inspect MODEL.onnx


def test_inspect_onnx_shows_io_dims_ops_and_lint(tmp_path) -> None:
    result = invoke("inspect", MODEL, "--target", "tensorrt-7.1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "ONNX model, IR 7, opset ai.onnx 13" in lines[0]
    assert "  input  image  float32  [batch, 1, 8, 8]" in lines
    assert "  batch: image:0, logits:0" in lines
    assert any(line.startswith("ops: Constant 6, Conv 3") for line in lines)
    assert lines[-1].startswith("lint for tensorrt-7.1 (--target): 2 finding(s), 2 fixable")
    data = json.loads(invoke("inspect", MODEL, "--json").output)
    assert data["kind"] == "onnx" and data["outputs"][0]["name"] == "logits"


def test_inspect_lists_external_data(tmp_path) -> None:
    model = onnx.load(str(MODEL))
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    data = json.loads(invoke("inspect", path, "--json").output)
    assert data["external_data"] == [str(tmp_path / "ext.data")]
    assert data["external_data_bytes"] == (tmp_path / "ext.data").stat().st_size > 0


def test_inspect_shows_the_shared_question_mark_dim_of_ppocr_cls() -> None:
    cls = _rapidocr("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    result = invoke("inspect", cls)
    assert "  input  x  float32  [?, 3, '?', '?']" in result.output
    assert "  ?: x:2, x:3  (one name on several input axes" in result.output


# ---------------------------------------------------------------- fix --set-dim / --rename-dim


def test_fix_renames_and_sets_dims_and_the_model_still_computes_the_same(tmp_path) -> None:
    cls = _rapidocr("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    out = tmp_path / "cls.onnx"
    before = cls.read_bytes()
    result = invoke(
        "fix",
        cls,
        "-o",
        out,
        "--passes",
        "cleanup",
        "--rename-dim",
        "x:2=height",
        "--rename-dim",
        "x:3=width",
        "--set-dim",
        "x:0=2",
    )
    assert result.exit_code == 0, result.output
    assert cls.read_bytes() == before
    fixed = onnx.load(str(out))
    dims = [(d.dim_param or d.dim_value) for d in fixed.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, "height", "width"]
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 192)).astype(np.float32)
    ref = ort.InferenceSession(str(cls), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    new = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(new[0], ref[0], rtol=1e-5, atol=1e-6)


def test_fix_set_dim_by_name_reaches_inputs_outputs_and_value_info(tmp_path) -> None:
    out = tmp_path / "b1.onnx"
    result = invoke("fix", MODEL, "-o", out, "--passes", "cleanup", "--set-dim", "batch=1", "-q")
    assert result.exit_code == 0, result.output
    fixed = onnx.load(str(out))
    for value in [*fixed.graph.input, *fixed.graph.output, *fixed.graph.value_info]:
        assert all(d.dim_param != "batch" for d in value.type.tensor_type.shape.dim)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--set-dim", "nope=3", "no dimension of that name"),
        ("--set-dim", "batch=0", "positive integer"),
        ("--set-dim", "batch", "give OLD=NEW"),
        ("--set-dim", "image:7=1", "has 4 axes, no axis 7"),
        ("--rename-dim", "batch=4", "a number is --set-dim"),
    ],
)
def test_fix_dim_errors_are_one_line_usage_errors(tmp_path, option, value, message) -> None:
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(cli, ["fix", str(MODEL), "-o", str(out), option, value])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.trt
def test_renamed_ppocr_cls_builds_where_the_original_cannot(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(tmp_path / "cache"))
    cls = _rapidocr("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    shapes = ["--shapes", "x:1x3x48x192/4x3x48x192/8x3x48x192", "--no-engine-cache"]
    refused = CliRunner().invoke(cli, ["build", str(cls), "-o", str(tmp_path / "a.e"), *shapes])
    assert refused.exit_code != 0 and "share the ONNX dimension name '?'" in refused.output
    renamed = tmp_path / "cls.onnx"
    args = ["--passes", "cleanup", "--rename-dim", "x:2=h", "--rename-dim", "x:3=w", "-q"]
    assert invoke("fix", cls, "-o", renamed, *args).exit_code == 0
    built = invoke("build", renamed, "-o", tmp_path / "b.e", *shapes)
    assert built.exit_code == 0, built.output


# ---------------------------------------------------------------- one data handling


def test_npz_with_extra_arrays_is_taken_by_input_name_everywhere(tmp_path, caplog) -> None:
    images = np.load(SAMPLE / "digits_test.npz")
    with_label = tmp_path / "with_label.npz"
    np.savez(with_label, image=images["image"][:32], label=images["label"][:32])
    only = tmp_path / "only.npz"
    np.savez(only, image=images["image"][:32])
    caches = []
    for data in (with_label, only):
        out = tmp_path / f"{data.stem}.cache"
        result = invoke("calibrate", MODEL, "--data", data, "-b", "8", "-o", out, "-q")
        assert result.exit_code == 0, result.output
        caches.append(out.read_text())
    assert caches[0] == caches[1]
    compare = invoke("compare", MODEL, MODEL, "--data", with_label, "-b", "8", "--json")
    assert compare.exit_code == 0 and json.loads(compare.output)["feeds"] == 4
    assert any("label are not model inputs" in r.getMessage() for r in caplog.records)


def test_fp16_command_keeps_float32_io_unless_asked(tmp_path) -> None:
    kept, narrow = tmp_path / "kept.onnx", tmp_path / "narrow.onnx"
    assert invoke("fp16", MODEL, "-o", kept, "-q").exit_code == 0
    assert invoke("fp16", MODEL, "-o", narrow, "--fp16-io", "-q").exit_code == 0
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert onnx.load(str(kept)).graph.input[0].type.tensor_type.elem_type == f32
    assert onnx.load(str(narrow)).graph.input[0].type.tensor_type.elem_type == f16
    both = CliRunner().invoke(
        cli, ["fp16", str(MODEL), "-o", str(tmp_path / "c.onnx"), "--fp16-io", "--keep-io-types"]
    )
    assert both.exit_code == 2


@pytest.mark.trt
def test_build_fp16_keeps_float32_io_and_int8_takes_preprocess_and_globs(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(tmp_path / "cache"))
    shapes = ["--shapes", "image:1x1x8x8/8x1x8x8/32x1x8x8"]
    fp16 = tmp_path / "fp16.engine"
    assert invoke("build", MODEL, "-o", fp16, "--fp16", *shapes, "-q").exit_code == 0
    fp16_io = tmp_path / "fp16io.engine"
    assert (
        invoke("build", MODEL, "-o", fp16_io, "--fp16", "--fp16-io", *shapes, "-q").exit_code == 0
    )
    dtypes = [t["dtype"] for t in _sidecar(fp16)["inputs"] + _sidecar(fp16)["outputs"]]
    dtypes_io = [t["dtype"] for t in _sidecar(fp16_io)["inputs"] + _sidecar(fp16_io)["outputs"]]
    assert set(dtypes) == {"float32"} and set(dtypes_io) == {"float16"}
    # --int8 --data: a quoted glob and --preprocess, as calibrate takes them
    glob = str(SAMPLE / "calib_images" / "*.png")
    int8 = tmp_path / "int8.engine"
    args = ["--int8", "--data", glob, "--preprocess", SAMPLE / "preprocess.json", *shapes, "-q"]
    result = invoke("build", MODEL, "-o", int8, *args)
    assert result.exit_code == 0, result.output
    config = _sidecar(int8)["config"]
    assert config["int8"] and config["preprocess"] == str(SAMPLE / "preprocess.json")


@pytest.mark.trt
@pytest.mark.slow
def test_build_int8_converts_an_opset_12_model(tmp_path, monkeypatch) -> None:
    """PP-OCRv4 det is opset 12: `build --int8` converts it as `quantize` does."""
    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(tmp_path / "cache"))
    det = _rapidocr("ch_PP-OCRv4_det_infer.onnx")
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32))
    result = invoke(
        "build", det, "-o", tmp_path / "det.engine", "--int8", "--data", data,
        "--shapes", "x:1x3x64x64", "--no-engine-cache",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
