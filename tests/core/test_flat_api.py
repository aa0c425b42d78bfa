"""The flat API at `onnx2trt_lib`: every step by one name, paths and ModelProtos alike,
one `compare` (candidate first) with one set of metrics, old spellings warned."""

from __future__ import annotations

import inspect as pyinspect
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnx2trt_lib as o2t
from onnx2trt_lib.errors import UsageError

FLAT = ("lint", "fix", "calibrate", "quantize", "to_fp16", "build", "compare", "inspect", "run")


def _sample():
    return o2t.sample_dir()


def test_every_flat_name_is_a_documented_callable() -> None:
    for name in FLAT:
        func = getattr(o2t, name)
        assert callable(func), name
        assert (func.__doc__ or "").strip(), name
        assert name in o2t.__all__
        pyinspect.signature(func)  # documented signatures (docs/api.md) need one


def test_import_is_cheap_and_flat_names_load_lazily() -> None:
    code = (
        "import sys, onnx2trt_lib as o;"
        "heavy = [m for m in ('onnx', 'numpy', 'onnxruntime', 'numba', 'tensorrt_rtx') if m in sys.modules];"
        "print(heavy); o.lint; print('onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "False"], out.stdout


def test_build_is_both_the_package_and_the_call() -> None:
    import onnx2trt_lib.build as package
    from onnx2trt_lib.build import BuildConfig, Builder

    assert o2t.build is package and callable(o2t.build)
    assert "shapes" in pyinspect.signature(o2t.build).parameters
    assert BuildConfig and Builder


def test_paths_and_modelprotos_give_the_same_results() -> None:
    path = _sample() / "digits.onnx"
    proto = onnx.load(str(path))
    before = proto.SerializeToString()
    assert [f.rule for f in o2t.lint(path, target="7.1")] == [
        f.rule for f in o2t.lint(proto, target="7.1")
    ]
    fixed_a, _ = o2t.fix(path, target="7.1")
    fixed_b, _ = o2t.fix(proto, target="7.1")
    assert fixed_a.SerializeToString() == fixed_b.SerializeToString()
    assert proto.SerializeToString() == before  # input never modified
    x = np.load(_sample() / "digits_test.npz")["image"][:4]
    out_path = o2t.run(path, {"image": x})["logits"]
    out_proto = o2t.run(proto, {"image": x})["logits"]
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(out_path, out_proto)
    np.testing.assert_array_equal(out_path, reference.run(None, {"image": x})[0])


def test_lint_and_fix_default_to_the_installed_or_newest_target(monkeypatch) -> None:
    from onnx2trt_lib.compat import targets

    name, why = targets.default_target()
    assert name in targets.TARGETS and why
    assert name != "tensorrt-7.1"
    monkeypatch.setattr(targets, "default_target", lambda: ("tensorrt-7.1", "test"))
    # the default is looked up per call: the 7.1 findings appear without target=
    assert {f.rule for f in o2t.lint(_sample() / "digits.onnx")} == {
        "resize-scales-coordinate-mode",
        "gather-elements-unsupported",
    }


@pytest.mark.parametrize(
    ("version", "target"),
    [
        ("7.1.3.4", "tensorrt-7.1"),
        ("8.6.1", "tensorrt-8.6"),
        ("8.4.0", "tensorrt-8.2"),
        ("10.0.1", "tensorrt-10.0"),
        ("10.13.0.35", "tensorrt-10"),
        ("11.0.0", "tensorrt-11"),
    ],
)
def test_target_for_installed_version(version: str, target: str) -> None:
    from onnx2trt_lib.compat.targets import target_for_version

    assert target_for_version(version) == target


def _int8_pair(tmp_path):
    fixed, _ = o2t.fix(_sample() / "digits.onnx", target="7.1")
    images = np.load(_sample() / "digits_test.npz")["image"]
    calib = o2t.calibrate(fixed, images[64:192], batch_size=32)
    int8 = o2t.quantize(fixed, calib.amax, protect=False)
    int8_path = tmp_path / "int8.onnx"
    onnx.save(int8.model, str(int8_path))
    return fixed, int8.model, int8_path, images[:32]


def test_compare_metrics_against_an_independent_computation(tmp_path) -> None:
    fixed, int8, int8_path, x = _int8_pair(tmp_path)
    report = o2t.compare(int8_path, fixed, {"image": x}, atol=1e-5, rtol=1e-3)
    a = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    ya = a.run(None, {"image": x})[0].astype(np.float64)
    yb = b.run(None, {"image": x})[0].astype(np.float64)
    out = report["logits"]
    diff = np.abs(ya - yb)
    assert out.max_abs == pytest.approx(diff.max())
    assert out.max_rel == pytest.approx(diff.max() / np.abs(yb).max())
    assert out.mean_abs == pytest.approx(diff.mean())
    assert out.sqnr_db == pytest.approx(10 * math.log10((yb**2).sum() / (diff**2).sum()))
    cos = (ya * yb).sum() / np.sqrt((ya**2).sum() * (yb**2).sum())
    assert out.cosine == pytest.approx(cos)
    assert out.mismatches == int((diff > 1e-5 + 1e-3 * np.abs(yb)).sum())
    # the per-tensor view agrees on the output and adds quantized tensors, worst first
    layered = o2t.compare(int8, fixed, {"image": x}, per_tensor=True)
    assert layered["logits"].max_abs == pytest.approx(out.max_abs)
    sqnrs = [t.sqnr_db for t in layered.tensors]
    assert sqnrs and sqnrs == sorted(sqnrs)
    json.dumps(layered.to_dict(), default=str)
    assert "quantized tensor (worst first)" in layered._repr_html_()
    labels = np.load(_sample() / "digits_test.npz")["label"][:32]

    def accuracy(outputs):
        return float(np.mean(outputs["logits"].argmax(axis=1) == labels))

    scored = o2t.compare(int8, fixed, {"image": x}, metric=accuracy)
    assert scored.metric["reference"] == pytest.approx(np.mean(yb.argmax(axis=1) == labels))
    assert scored.metric["candidate"] == pytest.approx(np.mean(ya.argmax(axis=1) == labels))
    assert scored.metric["drop"] == pytest.approx(
        scored.metric["reference"] - scored.metric["candidate"]
    )


def test_compare_order_is_candidate_then_reference(tmp_path) -> None:
    fixed, _, int8_path, x = _int8_pair(tmp_path)
    forward = o2t.compare(int8_path, fixed, {"image": x})["logits"]
    backward = o2t.compare(fixed, int8_path, {"image": x})["logits"]
    assert forward.max_abs == pytest.approx(backward.max_abs)
    # max_rel is relative to the reference: swapping the two changes it
    assert forward.max_rel != pytest.approx(backward.max_rel)
    assert forward.sqnr_db != pytest.approx(backward.sqnr_db)


def test_compare_on_a_data_source_and_random_data() -> None:
    model = _sample() / "digits.onnx"
    report = o2t.compare(
        model,
        model,
        _sample() / "calib_list.txt",
        preprocess=_sample() / "preprocess.json",
        batch_size=16,
        atol=0,
        rtol=0,
    )
    assert report.passed and report.feeds > 1
    with pytest.raises(Exception, match="dynamic"):
        o2t.compare(model, model)  # dynamic batch: random data needs a shape


def test_old_quant_spellings_warn_and_still_work() -> None:
    from onnx2trt_lib.quant.api import quantize

    with pytest.warns(DeprecationWarning, match="onnx2trt_lib.quantize"):
        from onnx2trt_lib.quant import quantize as old
    assert old is quantize
    with pytest.warns(DeprecationWarning, match="candidate-first"):
        from onnx2trt_lib.quant import compare  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from onnx2trt_lib.quant import AccuracyReport, protect  # noqa: F401 - not deprecated


def test_to_fp16_keeps_float32_io_by_default() -> None:
    model = _sample() / "digits.onnx"
    kept = o2t.to_fp16(model).model
    narrow = o2t.to_fp16(model, keep_io_types=False).model
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [v.type.tensor_type.elem_type for v in kept.graph.input] == [f32]
    assert [v.type.tensor_type.elem_type for v in kept.graph.output] == [f32]
    assert [v.type.tensor_type.elem_type for v in narrow.graph.input] == [f16]


def test_inspect_onnx_model_and_cache(tmp_path) -> None:
    info = o2t.inspect(_sample() / "digits.onnx", target="7.1")
    assert info["kind"] == "onnx"
    assert info["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert info["opsets"] == {"ai.onnx": 13} and info["ir_version"] == 7
    proto = onnx.load(str(_sample() / "digits.onnx"))
    assert info["nodes"] == len(proto.graph.node) == sum(info["ops"].values())
    assert info["ops"]["Conv"] == sum(n.op_type == "Conv" for n in proto.graph.node)
    assert info["parameters"] == sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    assert info["dynamic_dims"]["batch"] == ["image:0", "logits:0"]
    assert info["lint"]["target"] == "tensorrt-7.1" and info["lint"]["findings"] == 2
    from_proto = o2t.inspect(proto, target="7.1")
    assert {k: v for k, v in from_proto.items() if k != "path"} == {
        k: v for k, v in info.items() if k != "path"
    }
    with pytest.raises(UsageError, match="no such file"):
        o2t.inspect(tmp_path / "missing.onnx")
