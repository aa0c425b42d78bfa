"""Runs from a cut answer with the very bytes of whole runs of the switch model."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnx2trt_lib.quant.qdq import insert_qdq
from onnx2trt_lib.quant.switch import SwitchSession, quantized_layers
from onnx2trt_lib.quant.switch_cuts import Cuts, _placed

from .test_switch import residual_model


def two_output_model() -> onnx.ModelProto:
    """A chain of five MatMuls with a second output `early` taken after the second, a Constant
    node at the start read only by the last Reshape, and a skip from mm0 to the end."""
    rng = np.random.default_rng(3)
    inits = [
        nh.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{i}") for i in range(5)
    ]
    nodes = [
        h.make_node("Constant", [], ["shape"], value=nh.from_array(np.array([-1, 8], np.int64))),
        h.make_node("MatMul", ["x", "w0"], ["t0"], name="mm0"),
        h.make_node("Relu", ["t0"], ["r0"]),
        h.make_node("MatMul", ["r0", "w1"], ["early"], name="mm1"),
        h.make_node("MatMul", ["early", "w2"], ["t2"], name="mm2"),
        h.make_node("Tanh", ["t2"], ["r2"]),
        h.make_node("MatMul", ["r2", "w3"], ["t3"], name="mm3"),
        h.make_node("Add", ["t3", "t0"], ["s3"]),
        h.make_node("MatMul", ["s3", "w4"], ["t4"], name="mm4"),
        h.make_node("Reshape", ["t4", "shape"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "two",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 8])],
        [
            h.make_tensor_value_info("y", T.FLOAT, None),
            h.make_tensor_value_info("early", T.FLOAT, ["n", 8]),
        ],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def _switch(model, ranges, most=6):
    from onnx2trt_lib.quant import switch_cuts

    full = insert_qdq(model, ranges=ranges)[0]
    layers = quantized_layers(full)
    previous, switch_cuts.MAX_CUTS = switch_cuts.MAX_CUTS, most
    try:
        return SwitchSession(full, layers, ranges), layers
    finally:
        switch_cuts.MAX_CUTS = previous


def _same_as_whole_runs(switch, layers, base, flips, feed):
    """run_flips from a base run made first (so every flip with a cut runs from it) against
    whole runs of each mix: the same bytes, and the cut path did run where it could."""
    start = switch.start(base, feed)
    switch.run_batch(base, feed, start)
    got = switch.run_flips(start, flips)
    for layer, out in zip(flips, got, strict=True):
        mix = set(base) ^ {layer}
        whole = switch.run_batch(mix, feed)
        assert set(out) == set(whole)
        for name in whole:
            np.testing.assert_array_equal(out[name], whole[name], err_msg=f"{layer} {name}")
    cuts = {switch.cuts.cut_for(layer) for layer in flips} - {None}
    assert {cut.position for cut in cuts} <= set(switch._suffixes)
    return bool(cuts)


def _plain_switch_outputs(full, layers, ranges, mix, feed):
    """The switch model's outputs in its own session, no tensor exposed (as before the cuts)."""
    from onnx2trt_lib.quant.accuracy import session
    from onnx2trt_lib.quant.switch import switch_model

    model, flags = switch_model(full, layers, ranges)
    names = [o.name for o in full.graph.output]
    values = session(model).run(
        names, {**feed, **{f: np.array(k in mix) for k, f in flags.items()}}
    )
    return dict(zip(names, values, strict=True))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_flips_from_cuts_equal_whole_runs(data):
    """Any base mix, any layers switched one at a time: the residual Adds' switches, an output
    made before a cut, and a constant node before it read after it."""
    which = data.draw(st.sampled_from(["residual", "two"]))
    if which == "residual":
        model = residual_model()
        names = ["x", "r1", "c1", "c2", "c3", "c4", "a1", "f"]
        x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
        feed = {"x": x[:, None][data.draw(st.integers(0, 2))]}
    else:
        model = two_output_model()
        names = ["x", "r0", "early", "r2", "s3"]
        feed = {"x": np.random.default_rng(2).standard_normal((3, 8)).astype(np.float32)}
    ranges = {n: data.draw(st.sampled_from([0.5, 2.0, 8.0])) for n in names}
    switch, layers = _switch(model, ranges, most=data.draw(st.integers(2, 6)))
    base = data.draw(st.lists(st.sampled_from(layers), unique=True))
    flips = data.draw(st.lists(st.sampled_from(layers), min_size=1, unique=True))
    _same_as_whole_runs(switch, layers, base, flips, feed)
    full = insert_qdq(model, ranges=ranges)[0]
    plain = _plain_switch_outputs(full, layers, ranges, base, feed)
    for name, value in switch.run_batch(base, feed).items():
        np.testing.assert_allclose(value, plain[name], rtol=1e-5, atol=1e-6)


def test_every_layer_of_both_models_runs_from_a_cut_somewhere():
    """The property test above reaches the cut path: on each model, from full INT8 and from
    all float, every layer after the first cut runs from it."""
    for model, names, x in (
        (residual_model(), ["x", "r1", "c1", "c2", "c3", "c4", "a1", "f"], (1, 3, 8, 8)),
        (two_output_model(), ["x", "r0", "early", "r2", "s3"], (3, 8)),
    ):
        switch, layers = _switch(model, dict.fromkeys(names, 2.0))
        feed = {"x": np.random.default_rng(6).standard_normal(x).astype(np.float32)}
        for base in (layers, []):
            assert _same_as_whole_runs(switch, layers, base, layers, feed)


def test_an_output_made_before_the_cut_comes_from_the_base_run():
    """mm2-mm4 run from a cut past `early`: their suffix does not make it, the base run did."""
    model = two_output_model()
    ranges = dict.fromkeys(["x", "r0", "early", "r2", "s3"], 2.0)
    switch, layers = _switch(model, ranges)
    cuts = switch.cuts
    assert cuts is not None
    late = [layer for layer in layers if cuts.cut_for(layer) is not None]
    assert late and any("early" in cuts.cut_for(layer).outputs_before for layer in late)
    feed = {"x": np.random.default_rng(4).standard_normal((5, 8)).astype(np.float32)}
    _same_as_whole_runs(switch, layers, layers, layers, feed)


def test_a_few_layers_near_the_start_run_whole():
    """Where the cuts would save less than the base run costs, no base run and no cut session."""
    model = residual_model()
    names = ["x", "r1", "c1", "c2", "c3", "c4", "a1", "f"]
    switch, layers = _switch(model, dict.fromkeys(names, 2.0))
    cuts = switch.cuts
    assert cuts is not None
    early = [layer for layer in layers if cuts.cut_for(layer) is None]
    feed = {"x": np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    start = switch.start(layers, feed)
    switch.run_flips(start, early)
    assert not start.values and not switch._suffixes
    switch.run_flips(start, layers)  # all of them save: the base ran
    assert start.values and switch._suffixes


def _total(positions, starts, costs, chosen):
    after = {p: sum(c for s, c in zip(starts, costs, strict=True) if s >= p) for p in positions}
    return sum(after[max(p for p in chosen if p <= s)] for s in starts)


@settings(max_examples=200, deadline=None)
@given(
    starts=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    costs_seed=st.integers(0, 1000),
    most=st.integers(1, 5),
)
def test_cut_placement_against_brute_force(starts, costs_seed, most):
    """The first position is always a cut; the summed cost never rises with more cuts allowed,
    never beats the best placement, and is the best one where one cut may be added."""
    costs = list(np.random.default_rng(costs_seed).integers(1, 100, len(starts)).astype(float))
    positions = sorted(set(starts))
    chosen = _placed(positions, starts, costs, most)
    assert chosen[0] == positions[0] and len(chosen) <= most
    got = _total(positions, starts, costs, chosen)
    best = min(
        _total(positions, starts, costs, [positions[0], *rest])
        for k in range(min(most, len(positions)))
        for rest in itertools.combinations(positions[1:], k)
    )
    assert got >= best - 1e-9
    if most == 2:
        assert got == pytest.approx(best)
    if most > 1:
        assert got <= _total(positions, starts, costs, _placed(positions, starts, costs, most - 1))


def test_cuts_on_pp_ocrv4_rec_give_whole_runs_bytes():
    """PP-OCRv4 rec (rapidocr's ONNX file; If switches on 51 layers, residual Adds): every layer
    switched from full INT8 and from all float, from its cut, equals a whole run."""
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    from onnx2trt_lib.quant.api import quantize

    model = onnx.load(Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 3, 48, 160)).astype(np.float32)
    from onnx2trt_lib.quant.accuracy import run

    names = [
        v.name
        for v in onnx.shape_inference.infer_shapes(model).graph.value_info
        if v.type.tensor_type.elem_type == T.FLOAT
    ]
    values = run(model, [{"x": x}], extra_outputs=names)
    ranges = {n: float(np.abs(v[0]).max()) or 1.0 for n, v in values.items()}
    ranges["x"] = 1.0
    q = quantize(model, ranges, protect=False).model
    layers = quantized_layers(q)
    assert len(layers) == 51
    switch = SwitchSession(q, layers, ranges)
    cuts = switch.cuts
    assert cuts is not None and len(cuts.positions) > 1
    for base in (layers, []):
        _same_as_whole_runs(switch, layers, base, layers, {"x": x})
    assert len(switch._suffixes) == len(cuts.positions) - 1


def test_cuts_without_costs_count_each_layer_once():
    model = two_output_model()
    full = insert_qdq(model, ranges=dict.fromkeys(["x", "r0", "early", "r2", "s3"], 2.0))[0]
    switch = SwitchSession(full, quantized_layers(full), {})
    cuts = switch.cuts
    assert isinstance(cuts, Cuts)
    assert [cuts.share(layer) for layer in quantized_layers(full)] == sorted(
        (cuts.share(layer) for layer in quantized_layers(full)), reverse=True
    )
    assert cuts.share(quantized_layers(full)[0]) == 1.0


def test_ir3_lists_its_initializers_as_inputs_and_protect_still_searches():
    """Below IR 4 the initializers are graph inputs too: they are weights, not data a cut
    carries (review: a KeyError in protect's repair)."""
    from onnx2trt_lib.quant.agreement import Criterion
    from onnx2trt_lib.quant.protect import protect

    from .test_protect_search import chain, clipped_ranges, options

    model, x = chain([16, 24, 24, 24, 24, 24, 10], seed=1)
    factors = {"x": 0.9, "t1": 0.9, "t2": 0.9, "t3": 0.3, "t4": 0.9, "t5": 0.9}
    ranges = clipped_ranges(model, x, factors)
    new = protect(model, options(ranges), x, criterion=Criterion(agreement="top1"))
    model.ir_version = 3
    old = protect(model, options(ranges), x, criterion=Criterion(agreement="top1"))
    assert new.excluded and old.to_dict() == new.to_dict()
    full = insert_qdq(model, **options(ranges))[0]
    assert full.ir_version == 3
    switch = SwitchSession(full, quantized_layers(full), ranges)
    assert {i.name for i in full.graph.initializer} <= {i.name for i in full.graph.input}
    layers = quantized_layers(full)
    assert _same_as_whole_runs(switch, layers, layers, layers, {"x": x[:4]})


def test_a_fusion_across_a_kept_tensor_is_the_same_in_both_sessions():
    """A float Conv + BatchNormalization whose Conv output is a later cut's tensor: the whole
    run exposes it, so ONNX Runtime does not fuse them; a run from an earlier cut must not
    either (review: 3.6e-6 apart before)."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.4).astype(np.float32)

    c = 8
    inits = [nh.from_array(w(c, c, 1, 1), n) for n in ("w0", "w1", "w2")]
    inits += [
        nh.from_array(w(c, c, 3, 3), "wf"),
        nh.from_array(w(c), "b"),
        nh.from_array(w(c), "m"),
    ]
    inits += [nh.from_array(rng.uniform(0.5, 2, c).astype(np.float32), n) for n in ("s", "v")]
    nodes = [
        h.make_node("Conv", ["x", "w0"], ["c0"], name="conv0"),
        h.make_node("Relu", ["c0"], ["r0"]),
        h.make_node("Conv", ["r0", "w1"], ["c1"], name="conv1"),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Neg", ["r1"], ["n1"]),
        h.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        h.make_node("Conv", ["n1", "wf"], ["cf"], name="convf", pads=[1, 1, 1, 1]),
        h.make_node("BatchNormalization", ["cf", "s", "b", "m", "v"], ["bf"], name="bn"),
        h.make_node("Mul", ["c2", "bf"], ["y"], name="mul"),
    ]
    graph = h.make_graph(
        nodes,
        "fuse",
        [h.make_tensor_value_info("x", T.FLOAT, [1, c, 9, 9])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    ranges = dict.fromkeys(["x", "r0", "r1", "c0", "c1", "cf", "c2", "bf"], 2.0)
    full = insert_qdq(model, ranges=ranges, exclude_nodes=["convf"])[0]
    layers = quantized_layers(full)
    switch = SwitchSession(full, layers, ranges, costs={"conv0": 100.0, "conv1": 1.0, "conv2": 1.0})
    feed = {"x": rng.standard_normal((1, c, 9, 9)).astype(np.float32)}
    for base in ([], layers):
        assert _same_as_whole_runs(switch, layers, base, layers, feed)


def test_an_output_no_node_makes_comes_from_the_base_run():
    """A model output that is its input: no suffix makes it (review: ONNX Runtime refused the
    suffix model)."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array((rng.standard_normal((8, 8)) * 0.4).astype(np.float32), f"w{i}")
        for i in range(5)
    ]
    nodes, prev = [], "x"
    for i in range(5):
        nodes += [
            h.make_node("MatMul", [prev, f"w{i}"], [f"t{i}"], name=f"mm{i}"),
            h.make_node("Relu", [f"t{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
    graph = h.make_graph(
        nodes,
        "echo",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 8])],
        [
            h.make_tensor_value_info(prev, T.FLOAT, ["n", 8]),
            h.make_tensor_value_info("x", T.FLOAT, ["n", 8]),
        ],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    switch, layers = _switch(model, dict.fromkeys(["x", *[f"r{i}" for i in range(5)]], 2.0))
    feed = {"x": rng.standard_normal((2, 8)).astype(np.float32)}
    assert _same_as_whole_runs(switch, layers, layers, layers, feed)


def test_a_mix_two_layers_from_the_base_is_refused():
    model = two_output_model()
    switch, layers = _switch(model, dict.fromkeys(["x", "r0", "early", "r2", "s3"], 2.0))
    feed = {"x": np.zeros((1, 8), np.float32)}
    start = switch.start(layers, feed)
    switch.run_batch(layers, feed, start)
    with pytest.raises(ValueError, match="differs from the base in 2 layers"):
        switch.run_batch(layers[2:], feed, start)
