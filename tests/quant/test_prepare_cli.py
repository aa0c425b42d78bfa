"""The techniques through `calibrate --qdq` and `quant.prepare_int8`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from test_no_silent_collapse import collapsing_model

from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.quant import prepare_int8

ort = pytest.importorskip("onnxruntime")


def _argmax(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(-1)


def test_smooth_quant_rescues_a_collapsing_model_at_full_int8(tmp_path):
    """mm2 reads an Add output with a 1000 outlier channel: plain full INT8 collapses, with
    --smooth-quant the same full INT8 model (nothing kept float) agrees with FP32."""
    model = tmp_path / "m.onnx"
    onnx.save(collapsing_model(), model)
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ref = _argmax(collapsing_model(), x)
    agree = {}
    for name, extra in (("plain", []), ("smooth", ["--smooth-quant"])):
        out = tmp_path / f"{name}.onnx"
        args = ["calibrate", str(model), "--data", str(tmp_path / "x.npy"), "--qdq", str(out)]
        args += ["-o", str(tmp_path / f"{name}.cache"), "--no-protect", "--json", *extra]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        payload = json.loads(res.output)
        agree[name] = float((_argmax(onnx.load(out), x) == ref).mean())
        if name == "smooth":
            counts = payload["prepare"]["techniques"][0]["counts"]
            assert counts == {"smoothed": 1, "folded_into_layernorm": 0}
            q = onnx.load(out)
            assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) >= 4
    assert agree["plain"] < 0.6 and agree["smooth"] == 1.0, agree


def test_techniques_need_qdq_one_line_error_nothing_written(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(collapsing_model(), model)
    np.save(tmp_path / "x.npy", np.ones((4, 4), np.float32))
    cache = tmp_path / "c.cache"
    res = CliRunner().invoke(
        cli,
        [
            "calibrate",
            str(model),
            "--data",
            str(tmp_path / "x.npy"),
            "-o",
            str(cache),
            "--equalize",
        ],
    )
    assert res.exit_code != 0 and "--qdq" in res.output and "Traceback" not in res.output
    assert not cache.exists()


def test_prepare_int8_on_digits_keeps_fp32_and_reports(digits):
    model, data = digits
    before = model.SerializeToString()
    x = data["x_test"][:200]
    prepared = prepare_int8(model, [{"x": data["x_calib"]}], equalize=True, bias_correction=True)
    assert model.SerializeToString() == before  # the input is not modified
    names = [r.name for r in prepared.results]
    assert names == ["equalize", "bias-correction"]
    assert prepared.results[0].counts["pairs"] == 1  # conv1 -> relu1 -> conv2
    assert prepared.results[1].counts["corrected"] == 4
    eq = prepare_int8(model, equalize=True).model
    sess = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        for m in (model, eq)
    ]
    a, b = (s.run(None, {"x": x})[0] for s in sess)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(np.abs(a).max()))
    with pytest.raises(Exception, match="need data"):
        prepare_int8(model, bias_correction=True)


def _rtx_builds(model: onnx.ModelProto) -> bool:
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString()) and not parser.num_errors
    config = builder.create_builder_config()
    return builder.build_serialized_network(network, config) is not None


def test_prepared_qdq_models_parse_and_build_in_tensorrt_rtx():
    """What the techniques write (Relu + per-channel Min for Relu6, a Mul by 1/s before a
    smoothed MatMul, a bias Add after a corrected MatMul) quantizes to Q/DQ that TensorRT-RTX takes."""
    from test_equalize import _chain
    from test_smooth_quant import _block

    from onnx2trt_lib.quant.api import quantize

    rng = np.random.default_rng(0)
    conv = _chain(rng, [3, 4, 4], [3, 3], [False, True], ["relu6"])
    block, _w, rows = _block(rng, 8, 4, True, False)
    cases = [
        (conv, {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)}, {"equalize": True}),
        (
            block,
            {"x": rng.standard_normal(rows).astype(np.float32)},
            {"smooth_quant": True, "bias_correction": True},
        ),
    ]
    for model, feed, options in cases:
        prepared = prepare_int8(model, [feed], **options)
        assert prepared.modified
        tensors = (
            {v.name for v in prepared.model.graph.value_info}
            | {o for n in prepared.model.graph.node for o in n.output}
            | {i.name for i in prepared.model.graph.input}
        )
        q = quantize(prepared.model, dict.fromkeys(tensors, 4.0), protect=False).model
        assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
        assert _rtx_builds(q)


def test_agreement_is_measured_against_the_reference_model():
    """quantize(reference=...) compares with that FP32 model, not with the (rewritten) one quantized:
    a reference whose logits are negated reads the opposite class on every row."""
    from onnx2trt_lib.quant.api import quantize

    model = collapsing_model()
    flipped = onnx.ModelProto()
    flipped.CopyFrom(model)
    w2 = next(i for i in flipped.graph.initializer if i.name == "w2")
    w2.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(w2), "w2"))
    x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
    ranges = {"x": 4.0, "h": 1.0}  # h clipped at 1: the 1000 column is never read
    own = quantize(model, ranges, data=[{"x": x}], protect=False).protection
    other = quantize(model, ranges, data=[{"x": x}], protect=False, reference=flipped).protection
    assert own.before > 0.9 and other.before < 0.1
