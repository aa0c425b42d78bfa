"""The `accuracy` agreement: FP32's posterior as the truth, against plain references.

The CTC forward algorithm is checked against torch's ctc_loss and against a brute-force sum over
every alignment; the per-row gains against plain softmax / enumeration; the early-exit bound
against the final score.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_agreement import softmax

from onnx2trt_lib.errors import UsageError
from onnx2trt_lib.quant.agreement import (
    Criterion,
    Judge,
    Posterior,
    ctc_log_likelihood,
    points,
)


def collapse(path, blank=0):
    """Greedy CTC reading of one alignment: repeats merged, blanks dropped (plain Python)."""
    out, prev = [], None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return tuple(out)


def brute_force(probs):
    """label -> P(label): the sum over all C**T alignments of the product of their frames."""
    t_len, c = probs.shape
    total: dict[tuple, float] = {}
    for path in itertools.product(range(c), repeat=t_len):
        p = math.prod(probs[t, k] for t, k in enumerate(path))
        total[collapse(path)] = total.get(collapse(path), 0.0) + p
    return total


@st.composite
def ctc_case(draw, max_t=30, max_c=8):
    t_len = draw(st.integers(1, max_t))
    c = draw(st.integers(2, max_c))
    length = draw(st.integers(0, t_len))
    label = draw(st.lists(st.integers(1, c - 1), min_size=length, max_size=length))
    if length >= 2 and draw(st.booleans()):  # a repeated class, which needs a blank between
        i = draw(st.integers(1, length - 1))
        label[i] = label[i - 1]
    seed = draw(st.integers(0, 2**16))
    sharp = draw(st.sampled_from([0.3, 1.0, 4.0]))
    logits = np.random.default_rng(seed).standard_normal((t_len, c)) * sharp
    return logits, label


@settings(max_examples=80, deadline=None)
@given(case=ctc_case())
def test_ctc_forward_equals_torch_ctc_loss(case):
    torch = pytest.importorskip("torch")
    logits, label = case
    lp = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), dim=-1)
    theirs = -torch.nn.functional.ctc_loss(
        lp[:, None],
        torch.tensor(label, dtype=torch.long),
        torch.tensor([len(logits)]),
        torch.tensor([len(label)]),
        blank=0,
        reduction="none",
    ).item()
    ours = ctc_log_likelihood(lp.numpy(), label)
    if math.isinf(theirs):  # no alignment fits in T frames
        assert ours == -math.inf
    else:
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    t_len=st.integers(1, 5),
    c=st.integers(2, 3),
    seed=st.integers(0, 2**16),
)
def test_ctc_forward_equals_the_sum_over_every_alignment(t_len, c, seed):
    probs = softmax(np.random.default_rng(seed).standard_normal((t_len, c)) * 2)
    exact = brute_force(probs)
    assert sum(exact.values()) == pytest.approx(1.0)
    for label, p in exact.items():
        assert math.exp(ctc_log_likelihood(np.log(probs), label)) == pytest.approx(p, rel=1e-9)
    # a label no alignment of T frames can read: [1, 1] needs 3 frames, (1,) * T needs 2T - 1
    # (one frame: the same log-probability up to rounding, 1 ulp apart for some seeds)
    assert ctc_log_likelihood(np.log(probs), (1,) * t_len) == pytest.approx(
        -math.inf if t_len > 1 else math.log(probs[0, 1]), rel=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), probs=st.booleans(), noise=st.sampled_from([0.0, 0.5, 3.0]))
def test_classifier_gains_equal_plain_softmax(seed, probs, noise):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((12, 5)) * 2
    ref = softmax(logits) if probs else logits  # distributions are used as they are
    test = ref + rng.standard_normal(ref.shape) * noise * (0.2 if probs else 1.0)
    p = softmax(logits)
    plain = [p[i, test[i].argmax()] - p[i, ref[i].argmax()] for i in range(12)]
    assert np.allclose(Posterior(ref).gains(test), plain, atol=1e-12)
    judge = Judge({"y": ref}, Criterion(agreement="accuracy"))
    assert judge.score({"y": test}) == pytest.approx(1 + np.mean(plain), abs=1e-12)
    assert all(g <= 0 for g in plain)  # the arg-max is FP32's most probable class


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), flips=st.integers(0, 6))
def test_ctc_gains_equal_brute_force_readings(seed, flips):
    rng = np.random.default_rng(seed)
    ref = softmax(rng.standard_normal((6, 5, 3)) * 2)
    test = ref.copy()
    for r in rng.choice(6, size=flips, replace=False):
        test[r] = softmax(rng.standard_normal((5, 3)) * 3)  # reads something else, or the same
    plain = []
    for r, t in zip(ref, test, strict=True):
        exact = brute_force(r)
        plain.append(exact.get(collapse(t.argmax(1)), 0.0) - exact.get(collapse(r.argmax(1)), 0.0))
    assert np.allclose(Posterior(ref).gains(test), plain, atol=1e-12)
    judge = Judge({"y": ref}, Criterion(agreement="accuracy"))
    assert judge.score({"y": test}) == pytest.approx(1 + np.mean(plain), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), ctc=st.booleans(), batch=st.integers(1, 7))
def test_early_exit_bound_never_undercuts_the_final_score(seed, ctc, batch):
    rng = np.random.default_rng(seed)
    shape = (20, 8, 6) if ctc else (20, 6)
    ref = softmax(rng.standard_normal(shape) * rng.choice([0.5, 3.0]))
    test = softmax(np.log(ref) + rng.standard_normal(shape) * 2)
    judge = Judge({"y": ref, "z": ref[::-1].copy()}, Criterion(agreement="accuracy"))
    out = {"y": test, "z": test[::-1].copy()}
    final = judge.score(out)
    gained = {"y": 0.0, "z": 0.0}
    assert judge.best_accuracy(gained, 0) >= final - 1e-12
    for start in range(0, 20, batch):
        part = {k: v[start : start + batch] for k, v in out.items()}
        for k, g in judge.gains(part, start).items():
            gained[k] += g
        end = min(start + batch, 20)
        assert judge.best_accuracy(gained, end) >= final - 1e-12
    assert judge.best_accuracy(gained, 20) == pytest.approx(final, abs=1e-12)


def test_accuracy_judge_targets_reports_and_refuses():
    rng = np.random.default_rng(0)
    ref = {"y": softmax(rng.standard_normal((10, 20, 7)) * 3)}
    judge = Judge(ref, Criterion(agreement="accuracy"))
    assert judge.target == 0.99 and judge.score(ref) == 1.0
    assert Judge(ref, Criterion(agreement="accuracy", min_agreement=0.995)).target == 0.995
    # the others keep theirs: top1 0.90 on sequences (whole readings), 0.99 on classes
    assert Judge(ref, Criterion(agreement="top1")).target == 0.90
    assert Judge({"y": ref["y"][:, 0]}, Criterion(agreement="top1")).target == 0.99
    mixed = {"y": ref["y"], "c": ref["y"][:, 0]}  # one class output: the class target for all
    assert Judge(mixed, Criterion(agreement="top1")).target == 0.99
    assert Judge(ref, Criterion(agreement="top1", min_agreement=0.99)).target == 0.99
    # not readings: (N, 1, C) classes, one position per row (a sequence-first output joined
    # along its time axis), (N, T, C) logits of a per-position classifier
    for not_reading in (ref["y"][:, :1], np.log(ref["y"])):
        assert Judge({"y": not_reading}, Criterion(agreement="top1")).target == 0.99
    assert judge.score({"y": ref["y"] * np.nan}) == -math.inf
    assert "expected accuracy change vs FP32" in judge.describe()
    assert judge.format(0.997) == "-0.30 points" and points(1.0) == "+0.00 points"
    with pytest.raises(UsageError, match="--agreement accuracy needs"):
        Judge({"y": np.zeros((4, 1, 8, 8))}, Criterion(agreement="accuracy"))


def softmax_collapsing_model(scale: float = 30.0):
    """test_no_silent_collapse's model with a softmax head (logits 0.1 x times `scale`): FP32
    writes probabilities, confident ones at the default scale (3 x)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh
    from test_no_silent_collapse import collapsing_model

    model = collapsing_model()
    graph = model.graph
    graph.node[-1].output[0] = "logits"
    graph.initializer.append(nh.from_array(np.asarray(scale, np.float32), "scale"))
    graph.node.extend(
        [
            h.make_node("Mul", ["logits", "scale"], ["scaled"], name="temperature"),
            h.make_node("Softmax", ["scaled"], ["y"], name="softmax", axis=-1),
        ]
    )
    del graph.output[:]
    graph.output.append(h.make_tensor_value_info("y", T.FLOAT, ["N", 4]))
    return model


@pytest.mark.parametrize("early_exit", [True, False])
def test_accuracy_protects_a_collapsing_softmax_model(monkeypatch, early_exit):
    """Full INT8 reads one class for every row: the expected loss is large, mm2 is kept float;
    the early exit (bound of the rows left) chooses what the full evaluation chooses."""
    from digits_cnn import max_abs_ranges
    from test_protect_search import options

    protect_mod = importlib.import_module("onnx2trt_lib.quant.protect")

    if not early_exit:
        monkeypatch.setattr(protect_mod, "EARLY_EXIT", ("top1",))
    model = softmax_collapsing_model()
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    report = protect_mod.protect(
        model,
        options(max_abs_ranges(model, x)),
        [{"x": x[i : i + 16]} for i in range(0, 64, 16)],
        criterion=Criterion(agreement="accuracy"),
    )
    assert report.kind == "accuracy" and report.held_out == 32
    assert report.before < 0.9  # more than 10 points expected lost
    assert [e.node for e in report.excluded] == ["mm2"]
    assert report.met and report.after == 1.0
    assert (
        "full INT8 -" in report.summary_lines()[0]
        and "-> written +0.00 points" in (report.summary_lines()[0])
    )


def test_early_exit_decides_as_the_full_evaluation_with_fewer_rows(monkeypatch):
    """A chain of MatMuls with clipped ranges and a softmax head: failing evaluations stop at
    the run where the bound misses the target, and the search ends with the same layers."""
    from test_protect_search import chain, clipped_ranges, options

    protect_mod = importlib.import_module("onnx2trt_lib.quant.protect")
    from onnx2trt_lib.quant.switch import SwitchSession

    model, x = chain([16, 16, 16, 16, 16, 6], seed=3)
    ranges = clipped_ranges(model, x, {"t1": 0.3, "t2": 0.5, "t3": 0.25, "t4": 0.6})
    model.graph.node[-1].output[0] = "logits"
    from onnx import helper as h

    model.graph.node.append(h.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1))
    rows = []
    real = SwitchSession.run_batch

    def counting(self, int8, feed, start=None):
        rows.append(len(next(iter(feed.values()))))
        return real(self, int8, feed, start)

    monkeypatch.setattr(SwitchSession, "run_batch", counting)
    data = [{"x": x[i : i + 32]} for i in range(0, 128, 32)]
    crit = Criterion(agreement="accuracy", min_agreement=0.99)
    fast = protect_mod.protect(model, options(ranges), data, criterion=crit)
    fast_rows, rows[:] = sum(rows), []
    monkeypatch.setattr(protect_mod, "EARLY_EXIT", ("top1",))
    full = protect_mod.protect(model, options(ranges), data, criterion=crit)
    assert fast.before < 0.99 and fast.met and full.met  # something had to be kept float
    assert [e.node for e in fast.excluded] == [e.node for e in full.excluded]
    assert fast.after == full.after
    assert 0 < fast_rows < fast.evaluations * 64  # some evaluations stopped early


def test_ctc_probabilities_of_pp_ocrv4_rec_readings_equal_torch():
    """A real CTC model: PP-OCRv4 rec (rapidocr) on words drawn with matplotlib's DejaVu font;
    P(reading) and P(another label) against torch's ctc_loss on the model's own output."""
    torch = pytest.importorskip("torch")
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    matplotlib = pytest.importorskip("matplotlib")
    from pathlib import Path

    import onnx
    from PIL import Image, ImageDraw, ImageFont

    from onnx2trt_lib.quant.accuracy import run

    model = onnx.load(Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx")
    font = ImageFont.truetype(
        str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), 30
    )
    rows = []
    for word in ("water", "Sound42", "look all"):
        img = Image.new("RGB", (320, 48), (255, 255, 255))
        ImageDraw.Draw(img).text((6, 4), word, fill=(20, 20, 20), font=font)
        rows.append((np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.5)
    probs = run(model, [{"x": np.stack(rows)}])[model.graph.output[0].name][0]
    post = Posterior(probs)
    assert post.is_distribution and post.ctc
    log_probs = torch.log(torch.tensor(probs, dtype=torch.float64).clamp_min(1e-300))
    for i, reading in enumerate(post.readings):
        assert len(reading) >= 4  # the model reads something word-like
        for label in (reading, reading[:-1], reading + reading[-1:]):
            theirs = torch.nn.functional.ctc_loss(
                log_probs[i][:, None],
                torch.tensor(label, dtype=torch.long),
                torch.tensor([probs.shape[1]]),
                torch.tensor([len(label)]),
                reduction="none",
            ).item()
            assert post.probability(i, label) == pytest.approx(
                math.exp(-theirs), rel=1e-6, abs=1e-12
            )
        assert 0.0 < post.p_ref[i] <= 1.0


def test_gains_of_no_rows_are_empty():
    """Rows past the reference's end (or an empty batch) give no gains instead of a reshape error."""
    ref = softmax(np.random.default_rng(0).standard_normal((4, 6, 5)))
    post = Posterior(ref)
    assert post.gains(ref, start=len(ref)).shape == (0,)
    assert post.gains(ref[:0]).shape == (0,)
    assert post.gains(ref, start=2).shape == (2,)


def halves_model():
    """Three branches (x_a, x_b, x_c, each through its own MatMul) summed into 2 logits and a
    sharp softmax, with 64 rows: rows 0-31 are read by x_a's size and rows 32-63 by x_b's, so
    clipping x_a at 2 flips the first half only and clipping x_b the second half only."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    nodes = [h.make_node("MatMul", [f"x_{k}", f"w_{k}"], [f"t_{k}"], name=f"mm_{k}") for k in "abc"]
    nodes += [
        h.make_node("Add", ["t_a", "t_b"], ["s1"]),
        h.make_node("Add", ["s1", "t_c"], ["s2"]),
        h.make_node("Add", ["s2", "bias"], ["logits"]),
        h.make_node("Mul", ["logits", "temp"], ["scaled"]),
        h.make_node("Softmax", ["scaled"], ["y"], axis=-1),
    ]
    inits = [nh.from_array(np.eye(2, dtype=np.float32), f"w_{k}") for k in "abc"] + [
        nh.from_array(np.array([0.0, 0.5], np.float32), "bias"),
        nh.from_array(np.array(10.0, np.float32), "temp"),
    ]
    graph = h.make_graph(
        nodes,
        "halves",
        [h.make_tensor_value_info(f"x_{k}", T.FLOAT, ["N", 2]) for k in "abc"],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 2])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    big = (np.array([5.0, 4.0]) + rng.uniform(0, 0.3, (32, 2))).astype(np.float32)
    small = rng.uniform(-0.1, 0.1, (64, 2)).astype(np.float32)
    x = {
        "x_a": np.concatenate([big, small[:32]]),
        "x_b": np.concatenate([small[32:], big]),
        "x_c": rng.uniform(-0.1, 0.1, (64, 2)).astype(np.float32),
    }
    ranges = {"x_a": 2.0, "x_b": 2.0, "x_c": 0.1, "w_a": 1.0, "w_b": 1.0, "w_c": 1.0}
    data = [{k: v[i : i + 16] for k, v in x.items()} for i in range(0, 64, 16)]
    return model, ranges, data


def test_a_mix_fitted_to_the_search_rows_is_searched_again_on_all_rows():
    """The search half is read by x_a, the held-out half by x_b: keeping mm_a in float satisfies
    the search rows and loses ~97 points on the held-out ones. The accuracy kind searches again
    on all 64 rows and keeps mm_b float too (before: mm_a alone, written with "NOT met"); so
    does top1 (its repair goes on from mm_a, led by the held-out rows it reads differently)."""
    from test_protect_search import options

    from onnx2trt_lib.quant.protect import protect

    model, ranges, data = halves_model()
    report = protect(model, options(ranges), data, criterion=Criterion(agreement="accuracy"))
    assert report.before < 0.5  # both halves flip under full INT8
    assert sorted(e.node for e in report.excluded) == ["mm_a", "mm_b"]
    assert report.met and report.after == 1.0
    assert report.held_out == 0 and report.samples == 64  # measured on the rows it decided on
    assert any("searched again on all 64 rows" in n for n in report.notes)
    assert "measured on the" not in report.summary_lines()[0]
    top1 = protect(model, options(ranges), data, criterion=Criterion(agreement="top1"))
    assert sorted(e.node for e in top1.excluded) == ["mm_a", "mm_b"]
    assert top1.met and top1.after == 1.0
    assert top1.held_out == 0 and top1.samples == 64
    assert any("searched again on all 64 rows" in n for n in top1.notes)


@pytest.mark.parametrize(("first", "kept", "mix_failures"), [(32, 1, 4), (30, 1, 6), (29, 2, 7)])
def test_the_retry_counts_a_mix_on_every_row_from_its_two_halves(
    monkeypatch, first, kept, mix_failures
):
    """top1 at 90% on halves_model's branches: x_a's size reads rows 0-7 (full INT8 fails the
    search half; floating mm_a repairs it), x_b's reads rows first-35, which the mix still
    flips: 4 held-out rows fail it (3 of 32 allowed), so the search runs again on all 64 rows
    (6 allowed). There the mix's failures are those of its two halves: where they pass
    (4 or 6) the retry keeps the mix without running its 64 rows again; 7 fail, and the run
    goes on as before (its early exit decides which rows lead the next repair step). The
    report is the same either way (protect.RETRY_FROM_PARTS off)."""
    import importlib
    from collections import defaultdict

    from test_protect_search import options

    from onnx2trt_lib.quant.switch import SwitchSession

    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")  # not the function
    model, ranges, _ = halves_model()
    rng = np.random.default_rng(3)
    big = (np.array([5.0, 4.0]) + rng.uniform(0, 0.3, (64, 2))).astype(np.float32)
    small = rng.uniform(-0.1, 0.1, (3, 64, 2)).astype(np.float32)
    x = {"x_a": small[0].copy(), "x_b": small[1].copy(), "x_c": small[2]}
    x["x_a"][:8] = big[:8]
    x["x_b"][first:36] = big[first:36]
    data = [{k: v[i : i + 16] for k, v in x.items()} for i in range(0, 64, 16)]
    rows = defaultdict(int)  # INT8 layers of a run -> rows it ran
    real = SwitchSession.run_batch

    def counted(self, int8_layers, feed, start=None):
        rows[tuple(sorted(int8_layers))] += len(feed["x_a"])
        return real(self, int8_layers, feed, start)

    monkeypatch.setattr(SwitchSession, "run_batch", counted)
    criterion = Criterion(agreement="top1", min_agreement=0.9)
    reports, mix_rows = [], []
    for from_halves in (True, False):
        monkeypatch.setattr(protect_module, "RETRY_FROM_PARTS", from_halves)
        rows.clear()
        reports.append(protect_module.protect(model, options(ranges), data, criterion=criterion))
        mix_rows.append(rows[("mm_b", "mm_c")])
    counted_, ran = reports
    assert any("searched again on all 64 rows" in n for n in counted_.notes)  # the retry ran
    assert counted_.to_dict() == ran.to_dict()
    assert len(counted_.excluded) == kept and counted_.excluded[0].node == "mm_a"
    assert counted_.met and counted_.before == 1 - (8 + 36 - first) / 64
    if mix_failures <= 6:
        assert counted_.after == 1 - mix_failures / 64
        # its repair step's 4 failing and 4 at-risk rows, its two halves, then (without the
        # count) every row again
        assert mix_rows == [8 + 64, 8 + 64 + 64]
    else:
        assert mix_rows[0] == mix_rows[1] > 64  # the run on every row, as before


@pytest.mark.parametrize("kind", ["accuracy", "top1"])
def test_the_retry_keeps_full_int8_when_it_passes_on_all_rows(monkeypatch, kind):
    """Row 0 (search half) is read by x_a alone: clipping it flips that row, so full INT8 fails
    the search half (-3 points of 32 rows) and the search keeps mm_a float. On the held-out
    rows x_a and x_b cancel: full INT8 clips both and agrees, mm_a float alone clips x_b and
    flips them all, so the retry runs. On all 64 rows full INT8 loses 1.5 points, inside a
    2-point budget: the retry keeps everything INT8 (before and after over the same rows)
    instead of a search that assumes full INT8 fails and keeps layers float it does not need.
    top1 (98% of rows) decides the same, and runs no row twice under full INT8."""
    from test_protect_search import options

    from onnx2trt_lib.quant.protect import protect
    from onnx2trt_lib.quant.switch import SwitchSession

    model, _, _ = halves_model()
    full = Counter()
    real = SwitchSession.run_batch

    def recorded(self, int8_layers, feed, start=None):
        if set(int8_layers) == {"mm_a", "mm_b", "mm_c"}:
            full.update(r.tobytes() for r in np.concatenate([feed["x_a"], feed["x_b"]], 1))
        return real(self, int8_layers, feed, start)

    monkeypatch.setattr(SwitchSession, "run_batch", recorded)
    rng = np.random.default_rng(1)

    def small(n: int) -> np.ndarray:
        return rng.uniform(-0.1, 0.1, (n, 2)).astype(np.float32)

    big = np.array([[5.1, 4.1]], np.float32) + np.linspace(0, 0.2, 32, dtype=np.float32)[:, None]
    x = {
        "x_a": np.concatenate([big[:1], small(31), big]),
        "x_b": np.concatenate([small(32), -big]),
        "x_c": small(64),
    }
    ranges = {"x_a": 2.0, "x_b": 2.0, "x_c": 0.1, "w_a": 1.0, "w_b": 1.0, "w_c": 1.0}
    data = [{k: v[i : i + 16] for k, v in x.items()} for i in range(0, 64, 16)]
    criterion = Criterion(agreement=kind, min_agreement=0.98)
    report = protect(model, options(ranges), data, criterion=criterion)
    assert any("searched again on all 64 rows" in n for n in report.notes)  # the retry ran
    assert report.excluded == () and report.met
    assert report.samples == 64 and report.held_out == 0
    assert report.after == report.before  # full INT8 both, over the same 64 rows
    if kind == "accuracy":
        assert 1 - 2 / 64 < report.before < 1 - 1 / 64 + 0.001  # one row of 64 flips
    else:
        assert report.before == 1 - 1 / 64  # one row of 64 reads differently
        assert len(full) == 64 and max(full.values()) == 1


@pytest.mark.parametrize("where", ["held-out rows", "repair", "repair step"])
def test_give_way_is_asked_once_where_the_first_repair_does_not_settle_the_search(
    monkeypatch, where
):
    """top1 on halves_model: the repair floats mm_a, which fails the held-out half; or, with
    every row searched (no held-out rows) and one repair step, the repair itself fails (each
    half needs its own layer); or with GIVE_WAY_STEPS 1 of 4 steps, asked after the first
    (the second agrees). give_way() True stops the search there (not met, nothing kept);
    False goes on to the very report of a search without it. The SQNR kind, with no repair,
    never asks."""
    import importlib

    from test_protect_search import options

    from onnx2trt_lib.quant.protect import protect

    protect_module = importlib.import_module("onnx2trt_lib.quant.protect")
    if where != "held-out rows":
        monkeypatch.setattr(protect_module, "MIN_HELD_OUT", 64)
        steps = 1 if where == "repair" else 4
        monkeypatch.setattr(protect_module, "REPAIR_STEPS", steps)
        monkeypatch.setattr(protect_module, "GIVE_WAY_STEPS", 1)
    model, ranges, data = halves_model()
    top1 = Criterion(agreement="top1")
    asked = []

    def answer(value):
        return lambda: asked.append(value) or value

    stopped = protect(model, options(ranges), data, criterion=top1, give_way=answer(True))
    assert asked == [True]
    assert not stopped.met and stopped.excluded == () and math.isnan(stopped.after)
    assert math.isnan(stopped.int8_mac_share_after)  # nothing was chosen
    json.dumps(stopped.to_dict(), allow_nan=False)  # strict JSON: NaN as a string
    why = "1 repair step(s) did not agree" if "repair" in where else "on the held-out rows"
    assert "search stopped" in stopped.notes[-1] and why in stopped.notes[-1]
    went_on = protect(model, options(ranges), data, criterion=top1, give_way=answer(False))
    assert asked == [True, False]
    plain = protect(model, options(ranges), data, criterion=top1)
    assert went_on.to_dict() == plain.to_dict()
    assert plain.met and sorted(e.node for e in plain.excluded) == ["mm_a", "mm_b"]
    protect(
        model, options(ranges), data, criterion=Criterion(agreement="sqnr"), give_way=answer(True)
    )
    assert asked == [True, False]


def test_give_way_is_not_asked_where_the_first_repair_settles_the_search():
    """top1 on common_mode_model: the repair floats mm2 in its first step and the held-out
    rows agree: give_way is never asked."""
    from test_protect_search import common_mode_model, options

    from onnx2trt_lib.quant.protect import protect

    model, x, ranges = common_mode_model()
    asked = []
    report = protect(
        model,
        options(ranges),
        x,
        criterion=Criterion(agreement="top1"),
        give_way=lambda: asked.append(1) or True,
    )
    assert asked == [] and report.met and [e.node for e in report.excluded] == ["mm2"]
