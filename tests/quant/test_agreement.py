"""Label-free agreement metrics against plain references."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx2trt_lib.quant.agreement import (
    Criterion,
    Judge,
    box_agreement,
    detections,
    pick_kind,
    top1_agreement,
)


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_auto_picks_from_the_output_shape_and_values():
    rng = np.random.default_rng(0)
    assert pick_kind({"y": rng.standard_normal((8, 10))}) == "top1"
    assert pick_kind({"y": softmax(rng.standard_normal((8, 40, 97)))}) == "top1"
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
