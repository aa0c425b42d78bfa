"""Cache reuse: the sidecar makes a matching re-run a hit, anything changed a miss, --force a miss."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.sidecar import (
    cache_hit,
    make_key,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)


def _key(**changes):
    base = dict(
        model_sha256="m",
        data_fingerprint="d",
        preprocess={"size": [1, 2]},
        method="entropy",
        method_options={},
        shapes={"x": (1, 3)},
        batch_size=None,
        settings={"mode": "two-pass"},
        library_version="0.1.0",
    )
    base.update(changes)
    return make_key(**base)


def test_key_fields_decide_hit_or_miss(tmp_path):
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8001-EntropyCalibration2\nx: 3c010204\n")
    write_sidecar(cache, _key())
    assert sidecar_path(cache).name == "c.cache.calib.json" and read_sidecar(cache)["key"] == _key()
    assert cache_hit(cache, _key())
    for change in (
        {"model_sha256": "m2"},
        {"data_fingerprint": "d2"},
        {"method": "mse"},
        {"preprocess": {"size": [1, 3]}},
        {"shapes": {"x": (2, 3)}},
        {"library_version": "0.2.0"},
        {"method_options": {"percentile": 99.9}},
        {"settings": {"mode": "single-pass"}},
    ):
        assert not cache_hit(cache, _key(**change)), change
    assert not cache_hit(cache, _key(), side_outputs={"ranges": tmp_path / "ranges.json"})
    cache.write_text("TRT-8001-EntropyCalibration2\nx: 3c010205\n")  # edited by hand
    assert not cache_hit(cache, _key())


def test_unknown_data_never_hits_even_with_an_identical_key(tmp_path):
    """A one-shot generator has no fingerprint: a sidecar written from one must not match the next."""
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8001-EntropyCalibration2\nx: 3c010204\n")
    write_sidecar(cache, _key(data_fingerprint=None))
    assert read_sidecar(cache)["key"] == _key(data_fingerprint=None)  # every other field matches
    assert not cache_hit(cache, _key(data_fingerprint=None))
    write_sidecar(cache, _key())
    assert cache_hit(cache, _key())  # the same file with a known fingerprint is a hit


def test_second_generator_with_other_data_recomputes(tmp_path):
    onnx.save(_model(), tmp_path / "m.onnx")
    rng = np.random.default_rng(7)
    small = [{"x": rng.standard_normal((4, 2)).astype(np.float32)} for _ in range(2)]
    large = [{"x": 100 * b["x"]} for b in small]
    out = tmp_path / "g.cache"
    first = calibrate(tmp_path / "m.onnx", (b for b in small), output=out, method="max")
    second = calibrate(tmp_path / "m.onnx", (b for b in large), output=out, method="max")
    assert not first.cache_hit and not second.cache_hit
    assert second.amax["x"] == pytest.approx(100 * first.amax["x"], rel=1e-5)


def test_missing_or_corrupt_sidecar_is_a_miss(tmp_path):
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8001-EntropyCalibration2\n")
    assert not cache_hit(cache, _key())
    sidecar_path(cache).write_text("{broken")
    assert not cache_hit(cache, _key())
    assert not cache_hit(tmp_path / "absent.cache", _key())


def _model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4) / 8, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_calibrate_reuses_recomputes_and_forces(tmp_path):
    onnx.save(_model(), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32))
    out = tmp_path / "m.cache"
    calls = []
    args = dict(output=out, batch_size=4, progress=lambda *a: calls.append(a))
    first = calibrate(tmp_path / "m.onnx", tmp_path / "x.npy", **args)
    assert not first.cache_hit and calls
    written = out.read_bytes()
    calls.clear()
    again = calibrate(tmp_path / "m.onnx", tmp_path / "x.npy", **args)
    assert again.cache_hit and not calls and out.read_bytes() == written  # no activations collected
    assert again.amax == pytest.approx(first.amax, rel=1e-6)  # read back from the float32 scales
    assert not calibrate(tmp_path / "m.onnx", tmp_path / "x.npy", force=True, **args).cache_hit
    assert not calibrate(tmp_path / "m.onnx", tmp_path / "x.npy", method="max", **args).cache_hit
    np.save(tmp_path / "x.npy", np.ones((8, 2), np.float32))  # new data, same file name
    assert not calibrate(tmp_path / "m.onnx", tmp_path / "x.npy", method="max", **args).cache_hit
    page = first._repr_html_()
    assert "<table>" in page and "h" in first.amax and "<td>h</td>" in page
    assert first.to_dict()["tensors"]["y"]["scale"] == pytest.approx(first.amax["y"] / 127)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["key"]["method"] == "max" and meta["header"].startswith("TRT-")


def test_state_from_another_model_is_refused(tmp_path):
    onnx.save(_model(), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32))
    calibrate(tmp_path / "m.onnx", tmp_path / "x.npy", batch_size=2, save_state=tmp_path / "s.json")
    other = _model()
    other.graph.node[1].output[0] = "y2"
    other.graph.output[0].name = "y2"
    with pytest.raises(Exception, match="different tensors than this model"):
        calibrate(
            other,
            tmp_path / "x.npy",
            batch_size=2,
            add_states=[tmp_path / "s.json"],
            output=tmp_path / "o.cache",
        )
    assert not (tmp_path / "o.cache").exists()
