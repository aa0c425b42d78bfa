"""calib.output_rows: calibration keeps the model's outputs on its first rows, and a Q/DQ check on
the same rows uses them instead of an FP32 run of its own."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx2trt_lib.calib.api import calibrate
from onnx2trt_lib.calib.output_rows import OutputRows, row_keys
from onnx2trt_lib.quant.api import quantize_calibrated

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
from helpers import count_fp32_runs  # noqa: E402
from test_range_choice import small_conv  # noqa: E402


def outputs_of(x: np.ndarray) -> dict[str, np.ndarray]:
    """A stand-in model: two outputs that are each a function of their row alone."""
    return {"sum": x.reshape(len(x), -1).sum(1), "neg": -x}


def cut(x: np.ndarray, sizes: list[int]) -> list[dict[str, np.ndarray]]:
    edges = np.cumsum([0, *sizes])
    return [{"x": x[a:b]} for a, b in zip(edges[:-1], edges[1:], strict=True) if a < len(x)]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    keep=st.integers(1, 48),
    kept_in=st.lists(st.integers(1, 9), min_size=1, max_size=12),
    asked_in=st.lists(st.integers(1, 9), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
    whole=st.booleans(),
)
def test_lookup_gives_each_kept_row_in_any_batching(rows, keep, kept_in, asked_in, seed, whole):
    """Rows kept from one batching come back in another, one array per batch, equal to the
    model's outputs; a row past the first `keep` (with `whole`: of a run that starts past
    them), or never seen, makes the lookup empty."""
    x = np.random.default_rng(seed).standard_normal((rows, 3, 2)).astype(np.float32)
    kept = OutputRows(["sum", "neg"], rows=keep, whole=whole)
    held = 0  # rows kept
    for feed in cut(x, kept_in * (rows // sum(kept_in) + 1)):
        if held < keep:
            held += len(feed["x"]) if whole else min(len(feed["x"]), keep - held)
        kept.add(feed, outputs_of(feed["x"]))
    asked = cut(x, asked_in * (rows // sum(asked_in) + 1))
    found = kept.lookup(asked)
    # found exactly when every asked row (all of them) is among the kept ones
    if held >= rows:
        assert [len(a) for a in found["sum"]] == [len(b["x"]) for b in asked]
        for feed, total, neg in zip(asked, found["sum"], found["neg"], strict=True):
            want = outputs_of(feed["x"])
            np.testing.assert_array_equal(total, want["sum"])
            np.testing.assert_array_equal(neg, want["neg"])
    else:
        assert found == {}
    other = x + 1.0  # rows never seen
    assert kept.lookup([{"x": other}]) == {}


def test_nothing_is_kept_past_the_byte_cap_or_without_a_row_axis():
    x = np.arange(32, dtype=np.float32).reshape(8, 4)  # 8 distinct rows
    capped = OutputRows(["y"], max_bytes=8 * 4 * 4 - 1)
    capped.add({"x": x}, {"y": x})
    assert not capped.usable and capped.lookup([{"x": x}]) == {}
    pooled = OutputRows(["y"])
    pooled.add({"x": x}, {"y": np.float32(3.0)})  # not one output row per input row
    assert not pooled.usable and pooled.lookup([{"x": x}]) == {}
    assert row_keys({"a": np.ones((2, 3)), "b": np.ones((3, 3))}) is None  # rows differ


def test_the_same_rows_with_other_values_are_other_keys():
    a = {"x": np.zeros((2, 3), np.float32)}
    b = {"x": np.zeros((2, 3), np.float32)}
    b["x"][1, 2] = 1e-30
    ka, kb = row_keys(a), row_keys(b)
    assert ka is not None and kb is not None
    assert ka[0] == kb[0] and ka[1] != kb[1]
    assert row_keys({"x": a["x"].astype(np.float64)})[0] != ka[0]  # dtype is part of the key


def test_calibration_keeps_the_outputs_a_plain_session_gives():
    """The kept outputs are the model's own, to float rounding, against a plain ORT session."""
    model = small_conv()
    x = np.random.default_rng(4).standard_normal((20, 2, 6, 6)).astype(np.float32)
    data = [{"x": x[i : i + 8]} for i in range(0, 20, 8)]
    cal = calibrate(model, data, method="entropy", keep_outputs=True)
    assert cal.output_rows is not None and cal.output_rows.usable
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    found = cal.output_rows.lookup([{"x": x[3:17]}])
    np.testing.assert_allclose(
        found["y"][0], sess.run(None, {"x": x[3:17]})[0], rtol=1e-5, atol=1e-5
    )
    assert calibrate(model, data, method="entropy").output_rows is None  # not by default


@pytest.mark.parametrize("keep", [True, False])
def test_the_qdq_check_uses_the_kept_outputs_of_the_same_model_only(monkeypatch, keep):
    """With kept outputs of the same model and rows, no FP32 run; the written model is the one
    an FP32 run gives. Another model (or keep_outputs=False) runs FP32 itself."""
    calls = count_fp32_runs(monkeypatch)
    model = small_conv()
    x = np.random.default_rng(5).standard_normal((64, 2, 6, 6)).astype(np.float32)
    data = [{"x": x[i : i + 16]} for i in range(0, 64, 16)]
    cal = calibrate(model, data, method="entropy", keep_outputs=keep)
    res = quantize_calibrated(model, cal, data)
    assert len(calls) == (0 if keep else 1)
    plain = quantize_calibrated(model, calibrate(model, data, keep_outputs=False), data)
    assert res.model.SerializeToString() == plain.model.SerializeToString()
    other = small_conv()
    other.graph.initializer[0].raw_data = bytes(len(other.graph.initializer[0].raw_data))
    calls.clear()
    quantize_calibrated(other, cal, data)  # calibrated on `model`: its outputs do not apply
    assert len(calls) == 1


def test_repeated_rows_are_kept_once_and_count_as_rows():
    """Data of few distinct rows (a repeated image): each distinct row is kept once, and rows
    seen count towards the limit, so calibration stops copying after `rows` rows."""
    x = np.repeat(np.arange(4, dtype=np.float32)[:, None], 2, axis=1)  # 4 distinct rows
    kept = OutputRows(["y"], rows=16)
    for _ in range(10):
        kept.add({"x": x}, {"y": 2 * x})
    assert kept.usable and kept.kept == 16 and len(kept.parts) == 1
    assert kept.bytes == x.nbytes  # one copy of each distinct row
    found = kept.lookup([{"x": x[[3, 0, 0]]}])
    np.testing.assert_array_equal(found["y"][0], 2 * x[[3, 0, 0]])
    inside = OutputRows(["y"])  # repeats within one run
    inside.add({"x": x[[1, 1, 2, 1]]}, {"y": 2 * x[[1, 1, 2, 1]]})
    assert inside.bytes == 2 * x[0].nbytes and inside.kept == 4
    np.testing.assert_array_equal(inside.lookup([{"x": x[[2, 1]]}])["y"][0], 2 * x[[2, 1]])


def test_a_run_crossing_the_limit_is_kept_whole_for_a_fixed_batch_only():
    """A fixed batch of 48 rows: the check reads whole batches (288 rows for 256), so the batch
    that crosses the limit is kept whole and the check finds all of its rows. With a dynamic
    batch the check cuts at the limit: only the first rows are kept (no memory for others)."""
    x = np.random.default_rng(0).standard_normal((96, 3)).astype(np.float32)
    for whole in (True, False):
        kept = OutputRows(["y"], rows=60, whole=whole)
        for feed in ({"x": x[:48]}, {"x": x[48:]}, {"x": x[:48] + 1}):
            kept.add(feed, {"y": feed["x"] * 3})
        assert kept.kept == (96 if whole else 60) and kept.bytes == kept.kept * 3 * 4
        np.testing.assert_array_equal(kept.lookup([{"x": x[40:60]}])["y"][0], x[40:60] * 3)
        assert bool(kept.lookup([{"x": x[40:96]}])) == whole
        assert kept.lookup([{"x": x[:48] + 1}]) == {}  # past the limit: not kept


def test_kept_outputs_are_not_the_reference_of_another_model(monkeypatch):
    """With `reference=` (the model before quant.prepare_int8 rewrote it) the agreement is with
    that model's outputs: the calibrated model's kept ones are not used."""
    calls = count_fp32_runs(monkeypatch)
    model = small_conv()
    x = np.random.default_rng(6).standard_normal((32, 2, 6, 6)).astype(np.float32)
    data = [{"x": x[i : i + 16]} for i in range(0, 32, 16)]
    cal = calibrate(model, data, method="entropy", keep_outputs=True)
    quantize_calibrated(model, cal, data, reference=small_conv())
    assert len(calls) == 1


def test_calibrate_qdq_on_the_command_line_runs_no_fp32_pass(monkeypatch, tmp_path):
    """`calibrate --qdq` keeps calibration's outputs and its check compares with them."""
    import onnx
    from click.testing import CliRunner

    from onnx2trt_lib.cli.main import cli

    calls = count_fp32_runs(monkeypatch)
    path, data = tmp_path / "m.onnx", tmp_path / "x.npy"
    onnx.save(small_conv(), path)
    np.save(data, np.random.default_rng(7).standard_normal((40, 2, 6, 6)).astype(np.float32))
    args = ["calibrate", str(path), "--data", str(data), "-o", str(tmp_path / "c.cache")]
    res = CliRunner().invoke(cli, [*args, "--qdq", str(tmp_path / "q.onnx")], obj={})
    assert res.exit_code == 0, res.output
    assert calls == []


@pytest.mark.parametrize(("extra", "rows", "batch"), [("nonzero", 20, "N"), ("nonzero", 16, 16)])
def test_an_output_that_is_not_one_row_per_input_row_is_not_compared_and_does_not_break(
    extra, rows, batch
):
    """An integer output of varying length (NonZero's indices) beside the judged float one,
    with too few rows to hold any out: the check runs (it used to refuse the range choice's
    full INT8 outputs) and writes the model it writes without kept outputs."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(1)
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name="c1"),
        h.make_node("Relu", ["c1"], ["r"], name="r"),
        h.make_node("Conv", ["r", "w2"], ["y"], name="c2"),
        h.make_node("Greater", ["y", "zero"], ["g"], name="gt"),
        h.make_node("NonZero", ["g"], ["nz0"], name="nz"),
        h.make_node("Transpose", ["nz0"], ["nz"], perm=[1, 0], name="tr"),
    ]
    graph = h.make_graph(
        nodes,
        "m",
        [h.make_tensor_value_info("x", T.FLOAT, [batch, 2, 6, 6])],
        [
            h.make_tensor_value_info("y", T.FLOAT, [batch, 3, 4, 4]),
            h.make_tensor_value_info("nz", T.INT64, ["K", 4]),
        ],
        [
            nh.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w1"),
            nh.from_array(rng.standard_normal((3, 4, 1, 1)).astype(np.float32), "w2"),
            nh.from_array(np.zeros((), np.float32), "zero"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    x = np.random.default_rng(5).standard_normal((rows, 2, 6, 6)).astype(np.float32)
    data = [{"x": x}]
    kept = quantize_calibrated(model, calibrate(model, data, keep_outputs=True), data)
    plain = quantize_calibrated(model, calibrate(model, data), data)
    assert kept.model.SerializeToString() == plain.model.SerializeToString()
    assert any("not compared" in n for n in kept.protection.notes)


def test_an_output_of_a_fixed_first_dim_is_not_kept_with_a_dynamic_batch():
    """A (1, 3) output beside the rows (the batch mean): with batch-1 calibration its one row
    per run looks like a row per input row, but joined into batches of 32 for the check it
    would not be FP32's; calibration keeps nothing then (it would without the declared 1)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    graph = h.make_graph(
        [
            h.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
            h.make_node("ReduceMean", ["y"], ["const"], axes=[0], keepdims=1, name="mean"),
        ],
        "m",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
        [
            h.make_tensor_value_info("y", T.FLOAT, ["N", 3]),
            h.make_tensor_value_info("const", T.FLOAT, [1, 3]),
        ],
        [
            nh.from_array(np.eye(4, 3, dtype=np.float32), "w"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    feeds = [{"x": x[i : i + 1]} for i in range(8)]
    assert calibrate(model, feeds, keep_outputs=True).output_rows is None
    model.graph.output[1].type.tensor_type.shape.dim[0].dim_param = "M"  # not declared fixed
    assert calibrate(model, feeds, keep_outputs=True).output_rows is not None
