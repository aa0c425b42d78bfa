"""Review fixes (round 2): shape-tensor inputs, external weights and the timing cache as outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib._io import OutputError
from onnx2trt_lib.build import BuildConfig, Builder, profiles_from_specs, read_sidecar
from onnx2trt_lib.errors import UsageError

pytestmark = pytest.mark.trt


def _reshape_model(batch: int | str = 2) -> onnx.ModelProto:
    """y = Reshape(x[batch,6], shp): `shp` is a shape tensor, its profile range is of values."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shp"], ["y"], name="reshape0")],
        "reshape",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6]),
            helper.make_tensor_value_info("shp", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_shape_tensor_input_gets_its_values_from_the_profile(tmp_path, rtx):
    model = tmp_path / "reshape.onnx"
    onnx.save(_reshape_model(), str(model))
    config = BuildConfig(profiles=profiles_from_specs(["shp:3x4"]))
    result = Builder(config, cache_dir=False).build(model, tmp_path / "r.engine")
    assert result.path.is_file()
    assert read_sidecar(result.path)["profiles"] == [
        [{"name": "shp", "min": [3, 4], "opt": [3, 4], "max": [3, 4]}]
    ]


def test_shape_tensor_values_with_a_dynamic_input_and_two_profiles(tmp_path, rtx):
    model = tmp_path / "reshape.onnx"
    onnx.save(_reshape_model("N"), str(model))
    config = BuildConfig(
        profiles=profiles_from_specs(["x:1x6/2x6/4x6,shp:1x6/2x6/4x6", "x:8x6,shp:8x6"])
    )
    result = Builder(config, cache_dir=False).build(model, tmp_path / "r.engine")
    assert len(read_sidecar(result.path)["profiles"]) == 2


@pytest.mark.parametrize(
    "specs, needle",
    [
        ((), "the build has no shape profile"),
        (("shp:2",), "gives 1 value(s)"),
        (("x:2x6",), "gives it no values"),
    ],
)
def test_shape_tensor_without_values_is_a_usage_error_naming_it(tmp_path, rtx, specs, needle):
    model = tmp_path / "reshape.onnx"
    onnx.save(_reshape_model(), str(model))
    with pytest.raises(UsageError, match="input 'shp' is a shape tensor") as info:
        Builder(BuildConfig(profiles=profiles_from_specs(specs)), cache_dir=False).build(
            model, tmp_path / "r.engine"
        )
    assert needle in str(info.value)
    assert not (tmp_path / "r.engine").exists()


def _external_model(tmp_path, location: str):
    w = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path, tmp_path / location


@pytest.mark.parametrize(
    "location, output", [("ext.data", "ext.data"), ("e.engine.json", "e.engine")]
)
def test_output_never_overwrites_the_models_external_weights(
    tmp_path, rtx, build_calls, location, output
):
    model, data = _external_model(tmp_path, location)
    before = data.read_bytes()
    with pytest.raises(OutputError, match="same file as input"):
        Builder(BuildConfig(), cache_dir=False).build(model, tmp_path / output)
    assert data.read_bytes() == before
    assert build_calls == []


@pytest.mark.parametrize("timing", ["t.engine", "t.engine.json"])
def test_timing_cache_cannot_be_the_engine_or_its_sidecar(
    tmp_path, rtx, save, models, build_calls, timing
):
    model = save(models["conv_relu"]())
    with pytest.raises(UsageError, match="--timing-cache .* is the same file as output"):
        Builder(BuildConfig(timing_cache=str(tmp_path / timing)), cache_dir=False).build(
            model, tmp_path / "t.engine"
        )
    assert build_calls == []
    assert not (tmp_path / "t.engine").exists()
