"""OrtRunner on CPU: named I/O, results against plain numpy, bad inputs, real PP-OCR models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from onnx2trt_lib.errors import ModelLoadError, RuntimeExecutionError
from onnx2trt_lib.runtime import OrtRunner, open_runner
from onnx2trt_lib.runtime.base import Runner, random_feed


def test_specs_from_model(affine_model) -> None:
    runner = OrtRunner(affine_model(["N", 4]))
    assert isinstance(runner, Runner)
    (x,) = runner.inputs
    (y,) = runner.outputs
    assert (x.name, x.dtype, x.shape) == ("x", np.dtype(np.float32), (None, 4))
    assert (y.name, y.dtype) == ("y", np.dtype(np.float32))
    assert "x: float32[?,4]" in repr(runner)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_matches_numpy_on_many_inputs(affine_model, batch: int, seed: int) -> None:
    make_affine_model = affine_model  # a pure builder: safe to share across examples
    rng = np.random.default_rng(seed)
    scale = rng.standard_normal(4).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    runner = OrtRunner(make_affine_model(["N", 4], scale=scale, bias=bias))
    x = rng.standard_normal((batch, 4)).astype(np.float32)
    out = runner.infer({"x": x})
    np.testing.assert_allclose(out["y"], x * scale + bias, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("onnx_type", "np_type"),
    [
        (TensorProto.FLOAT16, np.float16),
        (TensorProto.DOUBLE, np.float64),
        (TensorProto.INT32, np.int32),
        (TensorProto.INT64, np.int64),
    ],
)
def test_dtypes(affine_model, onnx_type: int, np_type: type) -> None:
    runner = OrtRunner(affine_model([2, 3], scale=3, bias=1, dtype=onnx_type))
    assert runner.inputs[0].dtype == np.dtype(np_type)
    x = np.arange(6, dtype=np_type).reshape(2, 3)
    out = runner.infer({"x": x})["y"]
    assert out.dtype == np.dtype(np_type)
    np.testing.assert_array_equal(out, x * 3 + 1)


def test_model_sources_path_bytes_proto(affine_model, tmp_path) -> None:
    model = affine_model([2])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = np.array([1.0, 2.0], np.float32)
    results = [
        r.infer({"x": x})["y"]
        for r in (
            OrtRunner(path),
            OrtRunner(model.SerializeToString()),
            OrtRunner(model),
            open_runner(path),
        )
    ]
    for res in results:
        np.testing.assert_array_equal(res, x * 2 + 0.5)
    assert open_runner(path).name == "m.onnx"


def test_bad_names(affine_model) -> None:
    runner = OrtRunner(affine_model([2]))
    with pytest.raises(
        RuntimeExecutionError,
        match=r"unknown input\(s\) \['z'\] and missing input\(s\) \['x'\]; the model's inputs are \['x'\]",
    ):
        runner.infer({"z": np.zeros(2, np.float32)})
    with pytest.raises(RuntimeExecutionError, match=r"missing input\(s\) \['x'\]"):
        runner.infer({})
    with pytest.raises(RuntimeExecutionError, match="must be a dict"):
        runner.infer([np.zeros(2, np.float32)])


def test_bad_shapes_and_dtypes(affine_model) -> None:
    runner = OrtRunner(affine_model(["N", 4]))
    with pytest.raises(
        RuntimeExecutionError, match=r"input 'x' has shape \[2, 5\], the model expects \[\?,4\]"
    ):
        runner.infer({"x": np.zeros((2, 5), np.float32)})
    with pytest.raises(RuntimeExecutionError, match=r"shape \[4\], the model expects"):
        runner.infer({"x": np.zeros(4, np.float32)})
    with pytest.raises(
        RuntimeExecutionError,
        match=r"dtype float64, the model expects float32; convert it with \.astype\(np\.float32\)",
    ):
        runner.infer({"x": np.zeros((2, 4))})
    with pytest.raises(RuntimeExecutionError, match="not a numeric array"):
        runner.infer({"x": object()})


def test_non_contiguous_input_is_copied_not_modified(affine_model) -> None:
    runner = OrtRunner(affine_model(["N", 4]))
    base = np.arange(32, dtype=np.float32).reshape(4, 8)
    strided = base[:, ::2]  # (4, 4), not contiguous
    fortran = np.asfortranarray(np.arange(16, dtype=np.float32).reshape(4, 4))
    before = base.copy()
    for arr in (strided, fortran, base.reshape(8, 4)[::2]):
        assert not arr.flags.c_contiguous or arr is fortran
        out = runner.infer({"x": arr})["y"]
        np.testing.assert_array_equal(out, np.asarray(arr) * 2 + 0.5)
    np.testing.assert_array_equal(base, before)
    # lists of numbers are arrays too
    np.testing.assert_array_equal(
        runner.infer({"x": np.float32([[1, 2, 3, 4]])})["y"], [[2.5, 4.5, 6.5, 8.5]]
    )


def test_bad_model_files(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        OrtRunner(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    with pytest.raises(ModelLoadError):
        OrtRunner(junk)
    with pytest.raises(ModelLoadError, match="no such file"):
        open_runner(tmp_path / "nothing.engine")


def test_providers(affine_model) -> None:
    assert OrtRunner(affine_model([2]), providers="auto").providers[-1] == "CPUExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeExecutionError, match="install onnxruntime-gpu"):
            OrtRunner(affine_model([2]), providers="cuda")
    with pytest.raises(RuntimeExecutionError, match="not available"):
        OrtRunner(affine_model([2]), providers=["NoSuchExecutionProvider"])


def test_closed_runner(affine_model) -> None:
    with OrtRunner(affine_model([2])) as runner:
        pass
    with pytest.raises(RuntimeExecutionError, match="closed"):
        runner.infer({"x": np.zeros(2, np.float32)})


def test_async_form_returns_same_result(affine_model) -> None:
    runner = OrtRunner(affine_model([3]))
    x = np.ones(3, np.float32)
    pending = runner.infer_async({"x": x})
    assert pending.done()
    np.testing.assert_array_equal(pending.wait()["y"], runner.infer({"x": x})["y"])


def test_random_feed_needs_static_shapes(affine_model) -> None:
    feed = random_feed(OrtRunner(affine_model([2, 3])).inputs)
    assert feed["x"].shape == (2, 3) and feed["x"].dtype == np.float32
    with pytest.raises(RuntimeExecutionError, match="dynamic dimensions; give input data"):
        random_feed(OrtRunner(affine_model(["N", 3])).inputs)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (2, 3, 48, 192)),
        ("ch_PP-OCRv4_det_infer.onnx", (1, 3, 64, 96)),
    ],
)
def test_real_ppocr_models(ppocr, name: str, shape: tuple[int, ...]) -> None:
    runner = OrtRunner(ppocr(name))
    assert [s.name for s in runner.inputs] == ["x"] and runner.inputs[0].shape[1] == 3
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = runner.infer({"x": x})
    (value,) = out.values()
    assert value.shape[0] == shape[0] and np.isfinite(value).all()
    if "cls" in name:  # softmax over 2 classes
        np.testing.assert_allclose(value.sum(axis=1), 1.0, rtol=1e-5)
    else:  # sigmoid probability map at input resolution
        assert value.shape == (1, 1, 64, 96) and (value >= 0).all() and (value <= 1).all()
    with pytest.raises(RuntimeExecutionError, match=r"shape \[1, 4, 64, 96\]"):
        runner.infer({"x": np.zeros((1, 4, 64, 96), np.float32)})
