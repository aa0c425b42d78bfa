"""Label-free agreement metrics against plain references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx2trt_lib.errors import UsageError
from onnx2trt_lib.quant.agreement import (
    Criterion,
    Judge,
    box_agreement,
    detections,
    pick_kind,
    ties,
    top1_agreement,
)


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_auto_picks_from_the_output_shape_and_values():
    rng = np.random.default_rng(0)
    assert pick_kind({"y": rng.standard_normal((8, 10))}) == "top1"
    assert pick_kind({"y": softmax(rng.standard_normal((8, 40, 97)))}) == "top1"  # CTC
    assert pick_kind({"y": softmax(rng.standard_normal((8, 10)))}) == "top1"  # probabilities
    assert pick_kind({"y": rng.uniform(0, 1, (8, 10))}) == "top1"  # scores, not a posterior
    assert pick_kind({"y": rng.standard_normal((2, 84, 2100))}) == "boxes"
    assert pick_kind({"y": rng.standard_normal((2, 1, 32, 32))}) == "sqnr"
    assert (
        pick_kind({"a": rng.standard_normal((8, 10)), "b": rng.standard_normal((8, 3, 4, 4))})
        == "sqnr"
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), flips=st.integers(0, 10))
def test_top1_classifier_counts_changed_rows(seed, flips):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((10, 5))
    test = ref.copy()
    rows = rng.choice(10, size=flips, replace=False)
    for r in rows:  # move the maximum to another class
        test[r, ref[r].argmax()] = ref[r].min() - 1
    assert top1_agreement(ref, test) == (10 - flips) / 10


def test_ctc_reading_ignores_a_moved_blank_but_not_a_changed_character():
    def onehot(seq, c=5):
        return np.eye(c)[seq][None].astype(np.float32)

    fp32 = onehot([1, 1, 0, 2, 0])  # reads "1 2"
    moved = onehot([1, 0, 0, 2, 2])  # reads "1 2" too
    changed = onehot([1, 1, 0, 3, 0])  # "1 3"
    assert top1_agreement(fp32, moved) == 1.0
    assert top1_agreement(fp32, changed) == 0.0
    assert top1_agreement(fp32, fp32 * np.nan) != top1_agreement(fp32, fp32 * np.nan)  # NaN fails


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.5, 8.0))
def test_ties_are_the_positions_whose_fp32_top_two_probabilities_are_close(seed, scale):
    rng = np.random.default_rng(seed)
    z = scale * rng.standard_normal((6, 7, 5))
    p = softmax(z)
    top = np.sort(p, axis=-1)  # the plain reference: sort each position's probabilities
    np.testing.assert_array_equal(ties(p, gap=0.1), (top[..., -1] - top[..., -2]) < 0.1)
    assert not ties(z, gap=0.1).any()  # logits: their softmax is not taken for a belief


def test_a_flip_where_fp32_is_torn_reads_as_fp32_and_one_where_it_is_sure_does_not():
    fp32 = np.array([[[0.9, 0.05, 0.05], [0.49, 0.02, 0.49 - 1e-3], [0.9, 0.05, 0.05]]])
    fp32 = fp32 / fp32.sum(axis=-1, keepdims=True)  # reads "" (blank, blank, blank)
    torn = fp32.copy()
    torn[0, 1] = [0.2, 0.1, 0.7]  # a space at the torn frame: "2"
    sure = fp32.copy()
    sure[0, 2] = [0.2, 0.1, 0.7]  # the same at a frame FP32 is sure of
    assert ties(fp32).tolist() == [[False, True, False]]
    assert top1_agreement(fp32, torn) == 0.0  # without the ties: a differing reading
    assert top1_agreement(fp32, torn, 0.05) == 1.0
    assert top1_agreement(fp32, sure, 0.05) == 0.0
    judge = Judge({"y": fp32}, Criterion(agreement="top1"))
    assert judge.score({"y": torn}) == 1.0 and judge.score({"y": sure}) == 0.0
    assert judge.failing({"y": sure}, np.arange(1)).tolist() == [True]
    assert judge.failing({"y": torn}, np.arange(1)).tolist() == [False]
    # the row's risk is its closest untied position (0.9 - 0.05), not the tie
    assert judge.margins()[0] == pytest.approx(0.85, abs=1e-6)


def test_a_class_fp32_barely_considered_is_no_tie():
    """Only FP32's near runner-up is forgiven: [0.40, 0.37, 0.03, 0.20] read as class 1 agrees,
    as class 2 (FP32 gave it 0.03) or 3 does not."""
    fp32 = np.array([[0.40, 0.37, 0.03, 0.20]])
    judge = Judge({"y": fp32}, Criterion(agreement="top1"))
    assert "within 0.05" in judge.describe()
    for pick, agrees in ((1, True), (2, False), (3, False)):
        out = np.eye(4)[[pick]]
        assert judge.score({"y": out}) == float(agrees)
        assert judge.failing({"y": out}, np.arange(1)).tolist() == [not agrees]
    logits = Judge({"y": np.log(fp32) + 3.0}, Criterion(agreement="top1"))
    assert "within" not in logits.describe()  # logits: no ties, and the report does not claim any
    assert logits.score({"y": np.eye(4)[[1]]}) == 0.0


def yolo_head(boxes, classes, scores, anchors=50, nc=3):
    out = np.zeros((1, 4 + nc, anchors), np.float32)
    for a, ((cx, cy, w, h), c, s) in enumerate(zip(boxes, classes, scores, strict=True)):
        out[0, :4, a] = (cx, cy, w, h)
        out[0, 4 + c, a] = s
    return out


def test_boxes_match_same_class_at_iou_half_and_nms_removes_duplicates():
    ref = yolo_head(
        [(50, 50, 20, 20), (100, 100, 30, 30), (51, 50, 20, 20)], [0, 1, 0], [0.9, 0.8, 0.7]
    )
    assert [len(b) for b, _ in detections(ref)] == [2]  # the third duplicates the first
    same = yolo_head([(52, 50, 20, 20), (100, 101, 30, 30)], [0, 1], [0.6, 0.5])
    other_class = yolo_head([(50, 50, 20, 20), (100, 100, 30, 30)], [2, 1], [0.9, 0.8])
    shifted = yolo_head([(65, 50, 20, 20), (100, 100, 30, 30)], [0, 1], [0.9, 0.8])  # IoU 0.14
    low = yolo_head([(50, 50, 20, 20), (100, 100, 30, 30)], [0, 1], [0.9, 0.2])  # under 0.25
    r = detections(ref)
    assert box_agreement(r, detections(same)) == 1.0
    assert box_agreement(r, detections(other_class)) == 0.5
    assert box_agreement(r, detections(shifted)) == 0.5
    assert box_agreement(r, detections(low)) == 2 * 1 / 3
    empty = yolo_head([], [], [])
    assert box_agreement(detections(empty), detections(empty)) == 1.0


def test_judge_uses_the_bound_of_its_kind():
    rng = np.random.default_rng(1)
    ref = {"y": rng.standard_normal((100, 4))}
    judge = Judge(ref, Criterion())
    assert judge.kind == "top1" and judge.target == 0.99
    assert judge.ok(judge.score(ref)) and judge.score(ref) == 1.0
    noisy = {"y": ref["y"] + rng.standard_normal((100, 4)) * 0.3}
    assert not judge.ok(judge.score(noisy))
    sq = Judge(ref, Criterion(agreement="sqnr", min_sqnr_db=9))
    assert sq.kind == "sqnr" and sq.ok(sq.score(noisy))  # 9.2 dB
    assert not Judge(ref, Criterion(agreement="sqnr", min_sqnr_db=9.5)).ok(sq.score(noisy))


def test_box_ranking_sees_the_class_scores_under_the_coordinates():
    rng = np.random.default_rng(0)
    ref = np.zeros((2, 22, 100), np.float32)
    ref[:, :4] = rng.uniform(0, 320, (2, 4, 100))
    ref[:, 4:] = rng.uniform(0, 1, (2, 18, 100))
    noisy = ref.copy()
    noisy[:, 4:] += rng.normal(0, 0.3, (2, 18, 100)).astype(np.float32)
    judge = Judge({"y": ref}, Criterion(agreement="boxes"))
    whole = Judge({"y": ref}, Criterion(agreement="sqnr")).sensitivity_db({"y": ref}, {"y": noisy})
    assert whole > 40  # the whole head's SQNR hides the scores' error
    assert judge.sensitivity_db({"y": ref}, {"y": noisy}) < 10


# --- mask: probability maps read as a DB text detector reads them ------------------------------


def plain_mask_agreement(ref, test, thr=0.3):
    """Pixel by pixel in plain Python: per row |both above thr| / |either above thr|, the mean."""
    ious = []
    for r, t in zip(ref.reshape(len(ref), -1), test.reshape(len(test), -1), strict=True):
        both = either = 0
        for a, b in zip(r.tolist(), t.tolist(), strict=True):
            both += a > thr and b > thr
            either += a > thr or b > thr
        ious.append(both / either if either else 1.0)
    return sum(ious) / len(ious)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    noise=st.sampled_from([0.0, 0.05, 0.2, 0.6]),
    four=st.booleans(),
    empty=st.booleans(),
)
def test_mask_agreement_equals_a_plain_reference_on_random_maps(seed, noise, four, empty):
    rng = np.random.default_rng(seed)
    ref = 1 / (1 + np.exp(-(rng.standard_normal((3, 12, 16)) * 3 - 1)))
    if empty:  # a row with no text in FP32
        ref[1] = 0.1
    test = np.clip(ref + rng.normal(0, noise, ref.shape), 0, 1)
    if four:  # (N, 1, H, W), float32 as a model writes it
        ref, test = ref[:, None].astype(np.float32), test[:, None].astype(np.float32)
    judge = Judge({"y": ref}, Criterion(agreement="mask"))
    assert judge.kind == "mask"
    assert abs(judge.score({"y": test}) - plain_mask_agreement(ref, test)) < 1e-12
    assert judge.score({"y": ref}) == 1.0
    assert judge.score({"y": test * np.nan}) == -np.inf  # NaN is the worst


def test_mask_judge_refuses_other_shapes():
    with pytest.raises(UsageError, match="--agreement mask needs"):
        Judge({"y": np.zeros((4, 10))}, Criterion(agreement="mask"))


def test_auto_picks_mask_for_probability_maps_only():
    rng = np.random.default_rng(0)
    prob = 1 / (1 + np.exp(-rng.standard_normal((2, 1, 40, 40))))
    assert pick_kind({"y": prob}) == "mask"
    assert pick_kind({"y": prob[:, 0]}) == "mask"  # (N, H, W)
    assert pick_kind({"y": prob * 1.5}) == "sqnr"  # not a probability
    assert pick_kind({"y": np.repeat(prob, 3, axis=1)}) == "sqnr"  # several channels
    assert pick_kind({"y": prob[:, :, :4, :4]}) == "sqnr"  # too small to be an image
    # the other kinds stay theirs, also when their values happen to lie in [0, 1]
    assert pick_kind({"y": rng.uniform(0, 1, (2, 84, 2100))}) == "boxes"  # normalised YOLO head
    assert pick_kind({"y": softmax(rng.standard_normal((8, 40, 97)))}) == "top1"  # CTC
    assert pick_kind({"y": softmax(rng.standard_normal((8, 4)))}) == "top1"  # classifier
    assert pick_kind({"y": rng.uniform(0, 1, (8, 40, 6))}) == "sqnr"  # sigmoid per position


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(2, 8),
    st.sampled_from([np.float16, np.float32, np.float64]),
    st.integers(0, 2**32 - 1),
)
def test_top2_picks_what_a_partition_picks(rows, positions, classes, dtype, seed):
    """The two largest values per position, ties and repeated maxima included, in the outputs'
    own type: those np.partition puts last (the reference the faster pick replaced)."""
    from onnx2trt_lib.quant.agreement import _top2

    rng = np.random.default_rng(seed)
    values = rng.choice([0.0, 0.01, 0.25, 0.3, 0.5, 0.7, 1.0, -3.0], (rows, positions, classes))
    a = values.astype(dtype)
    expected = np.partition(a, -2, axis=-1)[..., -2:]
    top, second = _top2(a)
    assert top.dtype == a.dtype and second.dtype == a.dtype
    np.testing.assert_array_equal(top, expected[..., 1])
    np.testing.assert_array_equal(second, expected[..., 0])


# --- Tally: boxes and mask scores summed batch by batch, with a bound before the last --------


def random_heads(rng, rows: int, anchors: int = 12, nc: int = 3) -> np.ndarray:
    """(rows, 4 + nc, anchors) YOLO-like heads: boxes around a few centres, scores in 0-1."""
    out = np.zeros((rows, 4 + nc, anchors), np.float32)
    out[:, 0:2] = rng.choice([40.0, 80.0, 120.0], (rows, 2, anchors)) + rng.normal(
        0, 3, (rows, 2, anchors)
    )
    out[:, 2:4] = rng.uniform(15, 30, (rows, 2, anchors))
    out[:, 4:] = rng.uniform(0, 1, (rows, nc, anchors)) ** 3
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["boxes", "mask"]),
    noise=st.sampled_from([0.0, 0.05, 0.3]),
    cuts=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    nonfinite=st.booleans(),
)
def test_a_tally_sums_to_the_judges_score_and_bounds_it_before(seed, kind, noise, cuts, nonfinite):
    """Whatever the batches, the tally of every row is Judge.score of them joined (to the bit;
    two outputs, the worse counts; an integer output not judged), and its bound after each
    batch is at least the score every row ends with, for the test rows that came and rows to
    come that read exactly as FP32 (the best case it assumes)."""
    rng = np.random.default_rng(seed)
    rows = sum(cuts)

    def pair(scale: float) -> tuple[np.ndarray, np.ndarray]:
        if kind == "boxes":
            ref = random_heads(rng, rows)
            test = ref.copy()
            test[:, :4] += rng.normal(0, 40 * scale, test[:, :4].shape).astype(np.float32)
            test[:, 4:] = np.clip(test[:, 4:] + rng.normal(0, scale, test[:, 4:].shape), 0, 1)
        else:
            logits = rng.standard_normal((rows, 1, 6, 8)) * 3 - 1
            ref = (1 / (1 + np.exp(-logits))).astype(np.float32)
            test = np.clip(ref + rng.normal(0, scale, ref.shape), 0, 1).astype(np.float32)
        if nonfinite:
            test[rng.integers(rows)] = np.nan
        return ref, test

    (ref_y, test_y), (ref_z, test_z) = pair(noise), pair(noise / 2)
    judge = Judge({"y": ref_y, "z": ref_z}, Criterion(agreement=kind))
    test = {"y": test_y, "z": test_z}
    score = judge.score(test)
    tally = judge.tally()
    start = 0
    for n in cuts:
        count = np.array([n], np.int64)  # an output that is not one row per row, not judged
        tally.add({"count": count, **{k: v[start : start + n] for k, v in test.items()}})
        start += n
        best_case = judge.score(
            {k: np.concatenate([test[k][:start], r[start:]]) for k, r in judge.ref.items()}
        )
        assert tally.best() >= best_case >= score
    assert tally.rows == rows
    assert tally.value() == score  # the same bits: the same counts, the mean of the same array


def test_a_tally_refuses_kinds_it_cannot_bound_and_a_value_before_its_last_row():
    judge = Judge({"y": np.eye(4)[[0, 1]]}, Criterion(agreement="top1"))
    with pytest.raises(ValueError, match="boxes or mask"):
        judge.tally()
    ref = np.full((2, 1, 4, 4), 0.9, np.float32)
    tally = Judge({"y": ref}, Criterion(agreement="mask")).tally()
    tally.add({"y": ref[:1]})
    with pytest.raises(ValueError, match="1 rows of 2"):
        tally.value()
