"""No silent collapse: a model that full INT8 wrecks is measured, protected and reported so."""

from __future__ import annotations

import json

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnx2trt_lib.cli.main import cli


def collapsing_model() -> onnx.ModelProto:
    """4 features -> mm1 (copies them x0.1 next to a constant 1000 column) -> mm2 (reads the copies).

    mm2's input has range 1000, so any per-tensor INT8 scale that keeps the 1000 (the least-error
    one does) rounds the informative values (|v| < 0.5) to 0: full INT8 predicts one class.
    """
    w1 = np.zeros((4, 8), np.float32)
    w1[:, :4] = np.eye(4) * 0.1
    b1 = np.zeros(8, np.float32)
    b1[4] = 1000.0
    w2 = np.zeros((8, 4), np.float32)
    w2[:4] = np.eye(4)
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        h.make_node("Add", ["m1", "b1"], ["h"], name="bias1"),
        h.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
    ]
    graph = h.make_graph(
        nodes,
        "collapse",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])],
        [nh.from_array(w1, "w1"), nh.from_array(b1, "b1"), nh.from_array(w2, "w2")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def int8_layers(path) -> set[str]:
    model = onnx.load(path)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return {
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and producers.get(n.input[0]) == "DequantizeLinear"
    }


def test_calibrate_qdq_protects_a_collapsing_model_and_says_so(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(collapsing_model(), model)
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32))
    base = ["calibrate", str(model), "--data", str(data), "-o", str(tmp_path / "c.cache")]

    plain = CliRunner().invoke(cli, [*base, "--qdq", str(tmp_path / "full.onnx"), "--no-protect"])
    assert plain.exit_code == 0, plain.output
    assert int8_layers(tmp_path / "full.onnx") == {"mm1", "mm2"}
    assert "does NOT meet" in plain.output and "INT8 share" in plain.output
    agreement = float(plain.output.split("samples): ")[1].split("%")[0])
    assert agreement < 50  # collapsed: one class for (nearly) every row

    res = CliRunner().invoke(cli, [*base, "--qdq", str(tmp_path / "q.onnx"), "--force"])
    assert res.exit_code == 0, res.output
    assert int8_layers(tmp_path / "q.onnx") == {"mm1"}
    assert "protection: top-1 agreement" in res.output
    assert "-> written 100.00%" in res.output and ", met;" in res.output
    assert "kept in float (protected): mm2" in res.output

    js = CliRunner().invoke(cli, [*base, "--qdq", str(tmp_path / "j.onnx"), "--force", "--json"])
    payload = json.loads(js.output)["qdq"]["protection"]
    assert payload["met"] and payload["kind"] == "top1" and payload["before"] < 0.5
    assert [e["node"] for e in payload["excluded"]] == ["mm2"]
    assert payload["int8_mac_share_after"] == 0.5


def test_accuracy_agreement_protects_a_collapsing_softmax_model(tmp_path):
    """With --agreement accuracy, full INT8 of a model that writes probabilities (one class for
    every row) is reported as points lost, and mm2 is kept in float."""
    from test_expected_accuracy import softmax_collapsing_model

    model = tmp_path / "m.onnx"
    onnx.save(softmax_collapsing_model(), model)
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32))
    base = ["calibrate", str(model), "--data", str(data), "-o", str(tmp_path / "c.cache")]
    base += ["--agreement", "accuracy"]

    plain = CliRunner().invoke(cli, [*base, "--qdq", str(tmp_path / "full.onnx"), "--no-protect"])
    assert plain.exit_code == 0, plain.output
    assert "expected accuracy change vs FP32" in plain.output and "does NOT meet" in plain.output
    lost = float(plain.output.split("samples): ")[1].split(" points")[0])
    assert lost < -20  # points: FP32 was sure of most rows that now read class 0

    res = CliRunner().invoke(cli, [*base, "--qdq", str(tmp_path / "q.onnx"), "--force", "--json"])
    payload = json.loads(res.output)["qdq"]["protection"]
    assert payload["kind"] == "accuracy" and payload["met"] and payload["before"] < 0.8
    assert [e["node"] for e in payload["excluded"]] == ["mm2"]
    assert int8_layers(tmp_path / "q.onnx") == {"mm1"}


def test_quantize_labels_protected_layers(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(collapsing_model(), model)
    x = np.random.default_rng(1).standard_normal((32, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cache = tmp_path / "c.cache"
    assert (
        CliRunner()
        .invoke(cli, ["calibrate", str(model), "-d", str(tmp_path / "x.npy"), "-o", str(cache)])
        .exit_code
        == 0
    )
    res = CliRunner().invoke(
        cli,
        [
            "quantize",
            str(model),
            "--cache",
            str(cache),
            "--data",
            str(tmp_path / "x.npy"),
            "-o",
            str(tmp_path / "q.onnx"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "excluded by name" not in res.output
    assert "kept in float (protected): mm2" in res.output


def test_build_int8_from_data_on_a_strongly_typed_backend_protects(tmp_path, caplog):
    from onnx2trt_lib.build.backends import Backend, prepare_onnx_for_precision
    from onnx2trt_lib.build.config import BuildConfig

    class Strong(Backend):  # TensorRT 11 / RTX: no precision flags, INT8 is Q/DQ in the ONNX
        @property
        def has_precision_flags(self) -> bool:
            return False

    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(2).standard_normal((32, 4)).astype(np.float32))
    model = collapsing_model()
    config = BuildConfig(int8=True, calibration_data=str(data))
    with caplog.at_level("WARNING"):
        out = prepare_onnx_for_precision(model, config, Strong("tensorrt", "tensorrt", "11.0.0"))
    path = tmp_path / "prepared.onnx"
    onnx.save(out, path)
    assert int8_layers(path) == {"mm1"}
    assert "-> written 100.00%" in caplog.text and "INT8 share" in caplog.text
