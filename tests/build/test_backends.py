"""Backend detection and the precision hook for strongly typed backends."""

from __future__ import annotations

import sys
import types

import numpy as np
import onnx
import pytest

from onnx2trt_lib import _optional
from onnx2trt_lib.build import backends
from onnx2trt_lib.build.backends import Backend, detect_backend, prepare_onnx_for_precision
from onnx2trt_lib.build.config import BuildConfig
from onnx2trt_lib.errors import MissingDependencyError, UsageError
from onnx2trt_lib.passes import result


def test_unknown_backend_lists_choices():
    with pytest.raises(
        UsageError, match="unknown backend 'trt9'; choose one of auto, tensorrt, tensorrt-rtx"
    ):
        detect_backend("trt9")


def test_no_backend_installed_names_both_extras(monkeypatch):
    monkeypatch.setattr(_optional, "available", lambda module: False)
    with pytest.raises(
        MissingDependencyError, match=r"onnx2trt_lib\[tensorrt\].*onnx2trt_lib\[rtx\]"
    ):
        detect_backend("auto")
    with pytest.raises(
        MissingDependencyError, match=r"backend 'tensorrt' needs the tensorrt module.*\[tensorrt\]"
    ):
        detect_backend("tensorrt")
    with pytest.raises(MissingDependencyError, match=r"tensorrt_rtx module.*\[rtx\]"):
        detect_backend("tensorrt-rtx")


def test_import_of_build_package_does_not_import_tensorrt():
    code = "import onnx2trt_lib.build, onnx2trt_lib.cli.build_cmd, sys; print(any(m.startswith('tensorrt') for m in sys.modules))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.trt
def test_rtx_is_detected_as_strongly_typed(rtx):
    backend = detect_backend("tensorrt-rtx")
    assert backend.version == rtx.__version__
    assert backend.strongly_typed and not backend.has_precision_flags and not backend.has_calibrator
    assert not backend.has_timing_cache
    if not _optional.available("tensorrt"):
        assert detect_backend("auto").name == "tensorrt-rtx"


def _fake_pass_module(monkeypatch, module: str, pass_name: str, seen: list, *, takes_cache: bool):
    """Install onnx2trt_lib.passes.<module> with a pass that records its options and renames the graph."""

    class FakePass:
        name = pass_name
        op_types = ()

        if takes_cache:

            def __init__(self, *, ranges=None):
                seen.append(("init", ranges))
        else:

            def __init__(self, *, keep_io_types=None):
                seen.append(("init", None))
                seen.append(("keep_io_types", keep_io_types))

        def run(self, graph):
            seen.append(("run", graph.name))
            graph.name = graph.name + "+" + pass_name
            return result(pass_name, {"renamed": 1})

    mod = types.ModuleType(f"onnx2trt_lib.passes.{module}")
    mod.FakePass = FakePass
    monkeypatch.setitem(sys.modules, f"onnx2trt_lib.passes.{module}", mod)


def _tiny_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class _StrongBackend(Backend):
    @property
    def has_precision_flags(self) -> bool:  # what TensorRT 11 / RTX report
        return False


class _WeakBackend(Backend):
    @property
    def has_precision_flags(self) -> bool:  # what TensorRT 10 reports
        return True


def test_precision_hook_runs_passes_on_strongly_typed(monkeypatch, tmp_path):
    seen: list = []
    _fake_pass_module(monkeypatch, "to_fp16", "to-fp16", seen, takes_cache=False)
    _fake_pass_module(monkeypatch, "insert_qdq", "insert-qdq", seen, takes_cache=True)
    from onnx2trt_lib.calib.cache import CalibrationCache, write_cache

    cache = tmp_path / "calib.cache"
    write_cache(cache, CalibrationCache.from_amax({"x": 2.54, "y": 12.7}, version="10.3.0"))
    model = _tiny_model()
    before = model.SerializeToString()
    strong = _StrongBackend("tensorrt", "tensorrt", "11.0.0")

    out = prepare_onnx_for_precision(
        model, BuildConfig(fp16=True, int8=True, calibration_cache=str(cache)), strong
    )
    assert out.graph.name == "tiny+insert-qdq+to-fp16"  # Q/DQ first, then FP16 for the rest
    init = next(arg for kind, arg in seen if kind == "init" and arg is not None)
    assert init == pytest.approx({"x": 2.54, "y": 12.7}, rel=1e-6)  # amax read back from the cache
    assert model.SerializeToString() == before  # the input model is never modified
    assert ("keep_io_types", True) in seen  # float32 inputs/outputs unless fp16_io

    weak = _WeakBackend("tensorrt", "tensorrt", "10.3.0")
    assert prepare_onnx_for_precision(model, BuildConfig(fp16=True), weak) is model
    assert prepare_onnx_for_precision(model, BuildConfig(), strong) is model


def test_precision_hook_errors(monkeypatch, tmp_path):
    strong = _StrongBackend("tensorrt-rtx", "tensorrt_rtx", "1.7.1")
    monkeypatch.setitem(sys.modules, "onnx2trt_lib.passes.to_fp16", None)  # import fails
    with pytest.raises(
        MissingDependencyError, match="--fp16 on a strongly typed TensorRT needs the 'to-fp16' pass"
    ):
        prepare_onnx_for_precision(_tiny_model(), BuildConfig(fp16=True), strong)
    monkeypatch.setitem(sys.modules, "onnx2trt_lib.passes.insert_qdq", types.ModuleType("empty"))
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\nx: 3c010a14\n")
    with pytest.raises(MissingDependencyError, match="defines no pass named 'insert-qdq'"):
        prepare_onnx_for_precision(
            _tiny_model(), BuildConfig(int8=True, calibration_cache=str(cache)), strong
        )


def test_weak_backend_flags_are_skipped_on_strong(monkeypatch):
    """apply_precision_flags must not touch the builder config on strongly typed backends."""

    class Recorder:
        def set_flag(self, flag):  # pragma: no cover - failing path
            raise AssertionError("set_flag called on a strongly typed backend")

    strong = _StrongBackend("tensorrt-rtx", "tensorrt_rtx", "1.7.1")
    assert backends.apply_precision_flags(strong, Recorder(), BuildConfig(fp16=True), None) == []


@pytest.mark.trt
def test_real_fp16_and_int8_builds_on_rtx(tmp_path, rtx, models):
    """The real passes: FP16 keeps float32 I/O (float16 with fp16_io); INT8 from a cache and
    from --data both build."""
    from onnx2trt_lib.build import Builder
    from onnx2trt_lib.calib.cache import CalibrationCache, write_cache

    model = models["conv_relu"](1)
    fp16 = Builder(BuildConfig(fp16=True, backend="tensorrt-rtx"), cache_dir=False).build(model)
    io = BuildConfig(fp16=True, fp16_io=True, backend="tensorrt-rtx")
    fp16_io = Builder(io, cache_dir=False).build(model)
    assert [t["dtype"] for t in fp16.sidecar["inputs"] + fp16.sidecar["outputs"]] == [
        "float32",
        "float32",
    ]
    assert [t["dtype"] for t in fp16_io.sidecar["inputs"] + fp16_io.sidecar["outputs"]] == [
        "float16",
        "float16",
    ]
    plain = Builder(BuildConfig(backend="tensorrt-rtx"), cache_dir=False).build(model)
    assert plain.sidecar["inputs"][0]["dtype"] == "float32" and plain.engine != fp16.engine

    cache = tmp_path / "calib.cache"
    write_cache(cache, CalibrationCache.from_amax({"x": 3.0}, version="10.3.0"))
    int8 = Builder(BuildConfig(int8=True, calibration_cache=str(cache)), cache_dir=False).build(
        model
    )
    assert int8.engine and int8.engine != plain.engine


@pytest.mark.trt
def test_int8_from_data_runs_our_calibration_on_rtx(tmp_path, rtx, models):
    """--int8 --data: our entropy calibration (onnx2trt_lib.calib) gives the Q/DQ scales."""
    from onnx2trt_lib.build import Builder

    model = models["conv_relu"](1)
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    from_data = Builder(BuildConfig(int8=True, calibration_data=str(data)), cache_dir=False).build(
        model
    )
    assert from_data.sidecar["config"]["calibration_data"] == str(data)
