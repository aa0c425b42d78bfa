"""Protection reads a probability map where a DB text detector cuts it (agreement `mask`)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnx2trt_lib.cli.main import cli


def faint_text_model() -> onnx.ModelProto:
    """x (N, 1, H, W) -> c1 (x next to a constant 1000 channel) -> c2 (3.1 x - 6) -> Sigmoid.

    c2's input has range 1000, so its INT8 step (about 7.9) rounds the faint blobs (x = 2,
    probability 0.55) to 0 and keeps the strong ones (x = 10, probability 1): full INT8 loses
    the faint text while the map's SQNR stays above 20 dB (it is a few pixels).
    """
    w1 = np.array([[[[1.0]]], [[[0.0]]]], np.float32)  # (2, 1, 1, 1)
    b1 = np.array([0.0, 1000.0], np.float32)
    w2 = np.array([[[[3.1]], [[0.0]]]], np.float32)  # (1, 2, 1, 1)
    b2 = np.array([-6.0], np.float32)
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["f"], name="c1"),
        h.make_node("Conv", ["f", "w2", "b2"], ["z"], name="c2"),
        h.make_node("Sigmoid", ["z"], ["prob"], name="sig"),
    ]
    graph = h.make_graph(
        nodes,
        "faint",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 48, 48])],
        [h.make_tensor_value_info("prob", T.FLOAT, ["N", 1, 48, 48])],
        [nh.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def scenes(n: int, seed: int = 0) -> np.ndarray:
    """Two strong 16x16 blocks and one faint 3x3 block per scene, at random places."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 48, 48), np.float32)
    for i in range(n):
        for value, side, y0, y1 in ((10, 16, 0, 5), (10, 16, 21, 25), (2, 3, 42, 45)):
            y = int(rng.integers(y0, y1))  # in its own band of rows: no overlaps
            xx = int(rng.integers(0, 48 - side))
            x[i, 0, y : y + side, xx : xx + side] = value
    return x


def protection(tmp_path, *extra):
    model = tmp_path / "m.onnx"
    onnx.save(faint_text_model(), model)
    data = tmp_path / "x.npy"
    np.save(data, scenes(48))
    out = tmp_path / f"q{len(extra)}.onnx"
    args = ["calibrate", str(model), "--data", str(data), "-o", str(tmp_path / "c.cache")]
    res = CliRunner().invoke(cli, [*args, "--qdq", str(out), "--force", "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)["qdq"]["protection"]


def test_a_map_whose_faint_text_int8_loses_is_protected_by_default(tmp_path):
    sqnr = protection(tmp_path, "--agreement", "sqnr")
    assert sqnr["met"] and sqnr["excluded"] == [] and sqnr["before"] > 20  # SQNR sees nothing

    auto = protection(tmp_path)
    assert auto["kind"] == "mask"
    # full INT8 loses the 9 faint pixels of each scene's 512 + 9 above 0.3 (IoU 512 / 521)
    assert auto["before"] == pytest.approx(512 / 521)
    assert auto["met"] and auto["after"] == 1.0
    assert [e["node"] for e in auto["excluded"]] == ["c2"]
    assert auto["int8_mac_share_after"] == 0.5


def _chain_to_map(seed: int) -> tuple[onnx.ModelProto, np.ndarray]:
    """test_protect_search's MatMul chain read as an 8x8 probability map per row."""
    from test_protect_search import chain

    model, x = chain([16, 24, 24, 24, 24, 24, 64], seed=seed)
    graph = model.graph
    graph.node[-1].output[0] = "logits"
    graph.initializer.append(nh.from_array(np.array([-1, 1, 8, 8], np.int64), "map_shape"))
    graph.node.extend(
        [
            h.make_node("Reshape", ["logits", "map_shape"], ["map"], name="to_map"),
            h.make_node("Sigmoid", ["map"], ["y"], name="sig"),
        ]
    )
    del graph.output[:]
    graph.output.append(h.make_tensor_value_info("y", T.FLOAT, ["N", 1, 8, 8]))
    return model, x[:64]


def _chain_to_heads(seed: int) -> tuple[onnx.ModelProto, np.ndarray]:
    """test_protect_search's MatMul chain read as a YOLO-like head per row (8, 8 anchors):
    boxes centred at 40 + 10 x (20 x 20), and 4 class scores Sigmoid(x)."""
    from test_protect_search import chain

    model, x = chain([16, 24, 24, 24, 24, 24, 64], seed=seed)
    graph = model.graph
    graph.node[-1].output[0] = "logits"
    consts = {
        "head_shape": np.array([-1, 8, 8], np.int64),
        "box_scale": np.array([10.0, 10.0, 0.0, 0.0], np.float32).reshape(4, 1),
        "box_shift": np.array([40.0, 40.0, 20.0, 20.0], np.float32).reshape(4, 1),
        "at_0": np.array([0], np.int64),
        "at_4": np.array([4], np.int64),
        "at_8": np.array([8], np.int64),
        "axis_1": np.array([1], np.int64),
    }
    graph.initializer.extend(nh.from_array(v, k) for k, v in consts.items())
    graph.node.extend(
        [
            h.make_node("Reshape", ["logits", "head_shape"], ["head"], name="to_head"),
            h.make_node("Slice", ["head", "at_0", "at_4", "axis_1"], ["raw_box"], name="s1"),
            h.make_node("Mul", ["raw_box", "box_scale"], ["scaled_box"], name="scale"),
            h.make_node("Add", ["scaled_box", "box_shift"], ["box"], name="shift"),
            h.make_node("Slice", ["head", "at_4", "at_8", "axis_1"], ["raw_cls"], name="s2"),
            h.make_node("Sigmoid", ["raw_cls"], ["cls"], name="sig"),
            h.make_node("Concat", ["box", "cls"], ["y"], axis=1, name="cat"),
        ]
    )
    del graph.output[:]
    graph.output.append(h.make_tensor_value_info("y", T.FLOAT, ["N", 8, 8]))
    return model, x[:64]


@pytest.mark.parametrize(
    ("kind", "seed", "rows"),
    [("mask", 0, 64), ("mask", 1, 64), ("mask", 2, 24), ("boxes", 0, 64), ("boxes", 1, 24)],
)
def test_a_failing_evaluation_stops_where_even_perfect_rows_left_would_miss(
    monkeypatch, kind, seed, rows
):
    """boxes and mask evaluations on the search rows run two rows a run and stop at the wave
    where the score cannot reach the target any more (agreement.Tally): the same report as
    running every row of each (protect.BOUNDED empty), in fewer rows; with 24 rows nothing is
    held out and the report's value is the search's own (a tally that ran every row)."""
    import importlib

    from test_protect_search import clipped_ranges, options

    from onnx2trt_lib.quant.agreement import Criterion
    from onnx2trt_lib.quant.switch import SwitchSession

    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")  # not the function
    model, x = (_chain_to_heads if kind == "boxes" else _chain_to_map)(seed)
    x = x[:rows]
    factors = {"x": 0.9, "t1": 0.9, "t2": 0.3, "t3": 0.9, "t4": 0.3, "t5": 0.9}  # two to keep
    ranges = clipped_ranges(model, x, factors)
    ran = [0]
    real = SwitchSession.run_batch

    def counted(self, int8_layers, feed, start=None):
        ran[0] += len(feed["x"])
        return real(self, int8_layers, feed, start)

    monkeypatch.setattr(SwitchSession, "run_batch", counted)
    criterion = Criterion(agreement=kind, min_agreement=0.99)
    reports, counts = [], []
    for bounded in (protect_module.BOUNDED, ()):
        monkeypatch.setattr(protect_module, "BOUNDED", bounded)
        ran[0] = 0
        reports.append(protect_module.protect(model, options(ranges), x, criterion=criterion))
        counts.append(ran[0])
    assert reports[0].kind == kind and reports[0].excluded  # a search ran
    assert reports[0].held_out == (0 if rows < 32 else rows // 2)
    assert reports[0].to_dict() == reports[1].to_dict()
    assert counts[0] < counts[1]
