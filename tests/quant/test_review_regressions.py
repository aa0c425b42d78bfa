"""Regressions from the quantization review: fixed batch sizes, NaN and non-float outputs,
unnamed layers, which tensors need ranges, FP16 models, empty caches, CLI number checks."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnx2trt_lib.calib.cache import CalibrationCache, write_cache
from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.errors import CalibrationError, UsageError
from onnx2trt_lib.quant import Criterion, compare, quantize, to_fp16
from onnx2trt_lib.quant.accuracy import sqnr_db

SQNR = Criterion(agreement="sqnr")  # these tests check the SQNR bound's mechanics

ort = pytest.importorskip("onnxruntime")

# MACs per sample: conv1 8x8x8 outputs x 3x3x3, conv2 8x8x8 x 8x3x3, gemm 10 x 512
MACS = {"conv1": 512 * 27, "conv2": 512 * 72, "gemm": 10 * 512}


def conv_model(batch: int = 1, *, unnamed: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x -> Conv -> Relu -> Conv -> Add(residual) -> Flatten -> Gemm -> y."""
    rng = np.random.default_rng(seed)
    w1 = nh.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = nh.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w2")
    wg = nh.from_array(rng.standard_normal((10, 512)).astype(np.float32) * 0.05, "wg")
    name = (lambda n: "") if unnamed else (lambda n: n)
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name=name("conv1"), pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name=name("conv2"), pads=[1, 1, 1, 1]),
        h.make_node("Add", ["c2", "r1"], ["a"], name="add"),
        h.make_node("Flatten", ["a"], ["f"], name="flat"),
        h.make_node("Gemm", ["f", "wg"], ["y"], name=name("gemm"), transB=1),
    ]
    graph = h.make_graph(
        nodes,
        "m",
        [h.make_tensor_value_info("x", T.FLOAT, [batch, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [batch, 10])],
        [w1, w2, wg],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run_ort(
    model: onnx.ModelProto, x: np.ndarray, names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Outputs (and intermediate tensors `names`) by name, one batch-sized run per chunk."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in names or []:
        m.graph.output.append(onnx.ValueInfoProto(name=n))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feed_name = sess.get_inputs()[0].name
    dim = sess.get_inputs()[0].shape[0]
    step = dim if isinstance(dim, int) else len(x)
    outs = [sess.run(None, {feed_name: x[i : i + step]}) for i in range(0, len(x), step)]
    return {o.name: np.concatenate([r[k] for r in outs]) for k, o in enumerate(sess.get_outputs())}


def amax(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    names = ["x", "r1", "f", "a"]
    out = run_ort(model, x, names)
    return {n: float(np.abs(out[n]).max()) for n in names}


def data(rows: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, 8, 8)).astype(np.float32)


def output_sqnr(
    fp32: onnx.ModelProto, test: onnx.ModelProto, x: np.ndarray, name: str = "y"
) -> float:
    return sqnr_db(run_ort(fp32, x)[name], run_ort(test, x)[name])


def is_int8(model: onnx.ModelProto, node_name: str) -> bool:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    return producers.get(node.input[0]) == "DequantizeLinear"


def invoke(args: list[str]):
    return CliRunner().invoke(cli, [str(a) for a in args])


# 1. protection on a model with a fixed batch size > 1


def test_protection_runs_on_a_fixed_batch_of_4_with_batch_independent_mac_shares():
    model, x = conv_model(batch=4), data(8)
    ranges = amax(model, x)
    ranges["r1"] *= 0.02  # a range that wrecks conv2
    result = quantize(model, ranges, data=x, criterion=SQNR)
    report = result.protection
    assert report.met and [e.node for e in report.excluded] == ["conv2"]
    assert report.int8_mac_share_after == pytest.approx(
        (MACS["conv1"] + MACS["gemm"]) / sum(MACS.values())
    )
    assert (
        not is_int8(result.model, "conv2")
        and is_int8(result.model, "conv1")
        and is_int8(result.model, "gemm")
    )
    assert output_sqnr(model, result.model, x) >= 20


def test_fixed_batch_leaves_out_a_short_last_chunk_and_refuses_other_row_counts(caplog, tmp_path):
    model, x = conv_model(batch=4), data(10)  # 2 full batches of 4, 2 rows left over
    ranges = amax(model, x[:8])
    with caplog.at_level("WARNING"):
        result = quantize(model, ranges, data=x)
    assert (
        result.protection.met
        and "the last 2 sample(s) do not fill the model's fixed batch of 4" in caplog.text
    )
    with pytest.raises(
        UsageError, match=r"3 sample\(s\) are fewer than the model's fixed batch of 4"
    ):
        quantize(model, ranges, data=x[:3])
    with pytest.raises(
        UsageError, match=r"batch 0: input 'x' gets 2 rows but the model's batch is fixed at 4"
    ):
        quantize(model, ranges, data=[{"x": x[:2]}, {"x": x[2:6]}])
    onnx.save(model, tmp_path / "m.onnx")
    write_cache(tmp_path / "m.cache", CalibrationCache.from_amax(ranges, version="10.3.0"))
    np.save(tmp_path / "x.npy", x)
    res = invoke(
        [
            "quantize",
            tmp_path / "m.onnx",
            "--cache",
            tmp_path / "m.cache",
            "--data",
            tmp_path / "x.npy",
            "-o",
            tmp_path / "q.onnx",
        ]
    )
    assert res.exit_code == 0 and (tmp_path / "q.onnx").exists(), res.output


# 2. --data .npz honours a fixed batch size like .npy does


@pytest.mark.parametrize("batch", [1, 4])
def test_quantize_npz_data_is_cut_to_the_fixed_batch_size(tmp_path, batch):
    model, x = conv_model(batch=batch), data(8)
    model_path, cache = tmp_path / "m.onnx", tmp_path / "m.cache"
    onnx.save(model, model_path)
    write_cache(cache, CalibrationCache.from_amax(amax(model, x), version="10.3.0"))
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    reports = []
    for suffix in ("npy", "npz"):
        out = tmp_path / f"q_{suffix}.onnx"
        res = invoke(
            [
                "quantize",
                model_path,
                "--cache",
                cache,
                "--data",
                tmp_path / f"x.{suffix}",
                "-o",
                out,
                "--json",
            ]
        )
        assert res.exit_code == 0, res.output
        reports.append(json.loads(res.output)["protection"])
        assert out.exists()
    assert reports[0] == reports[1]


# 3. NaN/Inf in an FP32 reference output is a one-line error naming the output


def nan_model(first: bool) -> onnx.ModelProto:
    model = conv_model()
    model.graph.node.append(
        h.make_node("Log", ["y"], ["ly"], name="log")
    )  # log of negative logits: NaN
    info = h.make_tensor_value_info("ly", T.FLOAT, [1, 10])
    if first:
        model.graph.output.insert(0, info)
    else:
        model.graph.output.append(info)
    return model


@pytest.mark.parametrize("first", [False, True])
def test_nan_reference_output_is_refused_whatever_the_output_order(first):
    model, x = nan_model(first), data(6)
    with pytest.raises(CalibrationError, match=r"output 'ly' of the FP32 model is NaN or Inf"):
        quantize(model, amax(model, x), data=x)
    with pytest.raises(CalibrationError, match=r"output 'ly' of the reference model is NaN or Inf"):
        compare(model, quantize(model, amax(model, x), protect=False).model, x)


def test_nan_reference_output_is_one_line_in_the_cli(tmp_path):
    model, x = nan_model(False), data(6)
    onnx.save(model, tmp_path / "m.onnx")
    write_cache(tmp_path / "m.cache", CalibrationCache.from_amax(amax(model, x), version="10.3.0"))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "q.onnx"
    res = invoke(
        [
            "quantize",
            tmp_path / "m.onnx",
            "--cache",
            tmp_path / "m.cache",
            "--data",
            tmp_path / "x.npy",
            "-o",
            out,
        ]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert [line for line in res.output.splitlines() if line.startswith("error:")] == [
        res.output.strip()
    ]
    assert "'ly'" in res.output and not out.exists()


# 4. bool/integer outputs are not signals of the SQNR bound


def with_extra_output(model: onnx.ModelProto, kind: str) -> onnx.ModelProto:
    g = model.graph
    if kind == "bool":
        g.initializer.append(nh.from_array(np.array(0, np.float32), "zero"))
        g.node.append(h.make_node("Greater", ["y", "zero"], ["extra"], name="pos"))
        g.output.append(h.make_tensor_value_info("extra", T.BOOL, [1, 10]))
    else:
        g.node.append(h.make_node("ArgMax", ["y"], ["extra"], name="argmax", axis=1, keepdims=0))
        g.output.append(h.make_tensor_value_info("extra", T.INT64, [1]))
    return model


@pytest.mark.parametrize("kind", ["bool", "int64"])
def test_non_float_outputs_do_not_decide_protection(kind):
    model, x = with_extra_output(conv_model(), kind), data(64)
    ranges = amax(model, x[:1])
    full = quantize(model, ranges, protect=False).model
    assert output_sqnr(model, full, x) >= 20  # the float output alone meets the bound
    flips = run_ort(model, x)["extra"] != run_ort(full, x)["extra"]
    assert flips.any()  # and the non-float one differs, so counting it would change the verdict
    report = quantize(model, ranges, data=x, criterion=SQNR).protection
    assert report.met and report.excluded == () and report.int8_mac_share_after == 1.0
    assert any("not compared" in n and "extra" in n for n in report.notes)


def test_only_non_float_outputs_are_refused():
    model = with_extra_output(conv_model(), "int64")
    model.graph.output.pop(0)  # keep only the ArgMax
    x = data(6)
    with pytest.raises(UsageError, match="no float output"):
        quantize(model, amax(model, x), data=x)


# 5. unnamed weighted layers can be kept in float


def test_unnamed_layers_are_named_and_protected():
    model, x = conv_model(unnamed=True), data(6)
    ranges = amax(model, x[:1])
    ranges["r1"] *= 0.05
    result = quantize(model, ranges, data=x, criterion=SQNR)
    report = result.protection
    assert report.met and [e.node for e in report.excluded] == ["Conv:c2"]
    assert not is_int8(result.model, "Conv:c2") and is_int8(result.model, "Conv:c1")
    assert output_sqnr(model, result.model, x) >= 20
    assert any("Conv:c2" in n for n in result.notes)
    assert all(
        not n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")
    )  # input untouched


# 6. missing ranges are those the pass would quantize


def test_missing_ranges_skip_excluded_nodes():
    model, x = conv_model(), data(4)
    ranges = {k: v for k, v in amax(model, x).items() if k != "x"}
    result = quantize(model, ranges, exclude=["conv1"], strict=True, protect=False)
    assert result.missing_ranges == ()
    assert not is_int8(result.model, "conv1") and is_int8(result.model, "conv2")


def test_missing_ranges_include_residual_add_inputs():
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Sigmoid", ["x"], ["s"], name="sig"),
        h.make_node("Add", ["c", "s"], ["y"], name="add"),
    ]
    graph = h.make_graph(
        nodes,
        "r",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 3, 8, 8])],
        [nh.from_array(rng.standard_normal((3, 3, 3, 3)).astype(np.float32), "w")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    assert quantize(model, {"x": 3.0}, protect=False).missing_ranges == ("s",)
    with pytest.raises(CalibrationError, match="no range for 1 tensor.*: s;"):
        quantize(model, {"x": 3.0}, protect=False, strict=True)
    assert (
        quantize(model, {"x": 3.0}, protect=False, residual_add=False, strict=True).missing_ranges
        == ()
    )


# 7. FP16 models: per-tensor compare and protection cast float feeds


def test_compare_and_protection_on_an_fp16_model():
    model, x = conv_model(), data(6)
    half = to_fp16(model).model
    report = compare(model, half, x)
    assert report.outputs[0].sqnr_db > 40  # FP16 rounding only
    fp16_19 = onnx.version_converter.convert_version(model, 19)
    half19 = to_fp16(fp16_19).model
    ranges = amax(model, x[:1])
    ranges["r1"] *= 0.05
    result = quantize(half19, ranges, data=x, criterion=SQNR)
    assert result.protection.met and [e.node for e in result.protection.excluded] == ["conv2"]
    got = run_ort(result.model, x.astype(np.float16))["y"].astype(np.float32)
    assert sqnr_db(run_ort(model, x)["y"], got) >= 20


# 8. a cache with no usable entry is an error, not an unquantized model


@pytest.mark.parametrize("content", ["", "x: 7fc00000\nr1: 7f800000\nf: bf800000\n"])
def test_cache_without_usable_ranges_is_refused(tmp_path, content):
    model = conv_model()
    onnx.save(model, tmp_path / "m.onnx")
    cache = tmp_path / "bad.cache"
    cache.write_text("TRT-100300-EntropyCalibration2\n" + content)
    out = tmp_path / "q.onnx"
    res = invoke(["quantize", tmp_path / "m.onnx", "--cache", cache, "-o", out, "--no-protect"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert (
        res.output.strip().startswith("error: no usable ranges in")
        and len(res.output.strip().splitlines()) == 1
    )
    assert not out.exists()
    with pytest.raises(CalibrationError, match="no usable ranges"):
        quantize(model, {"x": math.nan})


# 9. --min-sqnr must be finite


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_min_sqnr_must_be_finite(tmp_path, value):
    model, x = conv_model(), data(4)
    onnx.save(model, tmp_path / "m.onnx")
    write_cache(tmp_path / "m.cache", CalibrationCache.from_amax(amax(model, x), version="10.3.0"))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "q.onnx"
    res = invoke(
        [
            "quantize",
            tmp_path / "m.onnx",
            "--cache",
            tmp_path / "m.cache",
            "--data",
            tmp_path / "x.npy",
            "--min-sqnr",
            value,
            "-o",
            out,
        ]
    )
    assert res.exit_code == 2 and "finite" in res.output and "Traceback" not in res.output
    assert not out.exists()
