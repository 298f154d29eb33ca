"""Label assignment, thresholds, NMS and the cap, on synthetic logits and scores (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded.detectors.grounding_dino import RawDetections, scores_from_logits
from grounded.detectors.scoring import select_detections

CLASSES = ["cat", "dog", "traffic light"]
DEFAULTS = {"box_threshold": 0.35, "text_threshold": 0.25, "nms_iou": 0.5}


def _raw(boxes, class_scores, box_scores=None, image_size=(480, 640)) -> RawDetections:
    class_scores = np.asarray(class_scores, dtype=np.float32)
    if box_scores is None:
        box_scores = class_scores.max(axis=1)
    return RawDetections(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        class_scores=class_scores.reshape(len(box_scores), -1),
        box_scores=np.asarray(box_scores, dtype=np.float32),
        image_size=image_size,
    )


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_multi_token_phrase_scores_by_its_best_token_and_box_score_covers_all_tokens():
    # caption "[CLS] cat . traffic light . [SEP]" padded to 8 positions
    token_class = np.array([-1, 0, -1, 1, 1, -1, -1])
    logits = torch.full((3, 8), -float("inf"))  # Q x L, -inf past the caption as in the model
    logits[:, :7] = _logit(0.05)
    logits[0, 4] = _logit(0.9)  # query 0: "light" fires -> class "traffic light"
    logits[1, 1] = _logit(0.6)  # query 1: "cat"
    logits[2, 2] = _logit(0.8)  # query 2: only the "." separator fires
    class_scores, box_scores = scores_from_logits(logits, token_class, 2)
    np.testing.assert_allclose(class_scores.numpy(), [[0.05, 0.9], [0.6, 0.05], [0.05, 0.05]], atol=1e-6)
    np.testing.assert_allclose(box_scores.numpy(), [0.9, 0.6, 0.8], atol=1e-6)

    raw = _raw(np.tile([10, 10, 50, 50], (3, 1)) + np.arange(3)[:, None] * 100, class_scores, box_scores)
    det = select_detections(raw, ["cat", "traffic light"], **DEFAULTS)
    # query 2 passes the box threshold on "." but no phrase passes the text threshold -> dropped
    assert det.data["class_name"].tolist() == ["traffic light", "cat"]
    assert det.class_id.tolist() == [1, 0]
    np.testing.assert_allclose(det.confidence, [0.9, 0.6], atol=1e-6)


def test_two_phrases_firing_on_one_box_give_exactly_the_higher_one():
    raw = _raw([[0, 0, 100, 100]], [[0.62, 0.81, 0.3]])
    det = select_detections(raw, CLASSES, **DEFAULTS)
    assert len(det) == 1
    assert det.data["class_name"].tolist() == ["dog"]
    assert det.class_id.tolist() == [1]
    assert all(name in CLASSES for name in det.data["class_name"])


def test_box_threshold_is_strict_and_drops_low_boxes():
    raw = _raw(
        np.tile([0, 0, 10, 10], (3, 1)) + np.arange(3)[:, None] * 20,
        [[0.3] * 3] * 3,
        box_scores=[0.34, 0.35, 0.36],
    )
    det = select_detections(raw, CLASSES, **DEFAULTS)
    np.testing.assert_allclose(det.confidence, [0.36], atol=1e-6)


def test_text_threshold_applies_to_the_chosen_class_score():
    raw = _raw([[0, 0, 10, 10], [50, 50, 60, 60]], [[0.2, 0.24, 0.1], [0.3, 0.1, 0.1]], box_scores=[0.9, 0.8])
    det = select_detections(raw, CLASSES, **DEFAULTS)
    assert det.data["class_name"].tolist() == ["cat"]
    np.testing.assert_allclose(det.confidence, [0.8], atol=1e-6)
    looser = select_detections(raw, CLASSES, **{**DEFAULTS, "text_threshold": 0.2})
    assert looser.data["class_name"].tolist() == ["dog", "cat"]


def test_nms_is_class_aware_by_default_and_class_agnostic_on_request():
    boxes = [[0, 0, 100, 100], [5, 5, 100, 100], [0, 0, 98, 100], [300, 300, 400, 400]]  # 0-1-2 overlap
    scores = [[0.9, 0.0, 0.0], [0.0, 0.8, 0.0], [0.7, 0.0, 0.0], [0.0, 0.0, 0.6]]
    raw = _raw(boxes, scores)
    aware = select_detections(raw, CLASSES, **DEFAULTS)
    assert aware.data["class_name"].tolist() == ["cat", "dog", "traffic light"]  # 2nd cat suppressed
    agnostic = select_detections(raw, CLASSES, **DEFAULTS, class_agnostic_nms=True)
    assert agnostic.data["class_name"].tolist() == ["cat", "traffic light"]
    assert len(select_detections(raw, CLASSES, **{**DEFAULTS, "nms_iou": None})) == 4
    # IoU(box0, box2) = 0.98: only a threshold above it keeps both cats
    assert len(select_detections(raw, CLASSES, **{**DEFAULTS, "nms_iou": 0.99})) == 4


def test_max_detections_caps_keeping_the_highest_scores():
    rng = np.random.default_rng(0)
    n = 150
    corners = np.stack([np.arange(n) * 20.0, np.zeros(n)], axis=1)  # disjoint 10 x 10 boxes
    boxes = np.concatenate([corners, corners + 10], axis=1)
    scores = rng.uniform(0.4, 1.0, size=n)
    raw = _raw(boxes, np.stack([scores, scores * 0.5, scores * 0.5], axis=1), image_size=(100, 4000))
    det = select_detections(raw, CLASSES, **DEFAULTS)
    assert len(det) == 100
    np.testing.assert_allclose(det.confidence, np.sort(scores)[::-1][:100], atol=1e-6)
    assert len(select_detections(raw, CLASSES, **DEFAULTS, max_detections=5)) == 5
    assert len(select_detections(raw, CLASSES, **DEFAULTS, max_detections=0)) == 0


def test_boxes_are_clipped_to_the_image_and_typed():
    raw = _raw([[-10, -5, 700, 500], [600, 400, 650, 490]], [[0.9, 0, 0], [0, 0.8, 0]], image_size=(480, 640))
    det = select_detections(raw, CLASSES, **DEFAULTS)
    np.testing.assert_array_equal(det.xyxy, [[0, 0, 640, 480], [600, 400, 640, 480]])
    assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
    assert det.class_id.dtype == np.int64 and det.data["class_name"].dtype.kind == "U"


def test_no_detection_gives_an_empty_result_with_the_same_keys():
    raw = _raw([[0, 0, 10, 10]], [[0.1, 0.2, 0.3]])
    det = select_detections(raw, CLASSES, **DEFAULTS)
    assert len(det) == 0
    assert det.xyxy.shape == (0, 4) and det.confidence.shape == (0,) and det.class_id.shape == (0,)
    assert det.data["class_name"].shape == (0,)


@pytest.mark.parametrize(
    "bad",
    [
        {"box_threshold": -0.01},
        {"box_threshold": 1.5},
        {"text_threshold": -1},
        {"text_threshold": 2},
        {"nms_iou": 1.01},
        {"nms_iou": -0.5},
        {"box_threshold": float("nan")},
    ],
)
def test_thresholds_outside_unit_interval_are_refused(bad):
    raw = _raw([[0, 0, 10, 10]], [[0.9, 0.1, 0.1]])
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"{name} must be in \\[0, 1\\]"):
        select_detections(raw, CLASSES, **{**DEFAULTS, **bad})


def test_bad_cap_and_class_list_mismatch_are_refused():
    raw = _raw([[0, 0, 10, 10]], [[0.9, 0.1, 0.1]])
    with pytest.raises(ValueError, match="max_detections"):
        select_detections(raw, CLASSES, **DEFAULTS, max_detections=-1)
    with pytest.raises(ValueError, match="2 class names given for detections scored over 3 classes"):
        select_detections(raw, CLASSES[:2], **DEFAULTS)


def test_random_batch_matches_a_plain_per_query_reference():
    rng = np.random.default_rng(1)
    q, c = 300, 5
    class_scores = rng.uniform(0, 1, size=(q, c)) ** 2
    box_scores = np.maximum(class_scores.max(axis=1), rng.uniform(0, 1, size=q))
    xy = rng.uniform(0, 600, size=(q, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 80, size=(q, 2))], axis=1)
    raw = _raw(boxes, class_scores, box_scores, image_size=(640, 640))
    names = [f"c{i}" for i in range(c)]
    det = select_detections(raw, names, box_threshold=0.5, text_threshold=0.4, nms_iou=None, max_detections=q)

    expected = []
    for i in range(q):  # the obvious loop: one query at a time
        best = int(np.argmax(class_scores[i]))
        if box_scores[i] > 0.5 and class_scores[i, best] > 0.4:
            expected.append((float(np.float32(box_scores[i])), best, np.clip(boxes[i], 0, 640)))
    expected.sort(key=lambda item: -item[0])
    assert len(det) == len(expected) > 20
    np.testing.assert_allclose(det.confidence, [e[0] for e in expected], atol=1e-6)
    assert det.class_id.tolist() == [e[1] for e in expected]
    assert det.data["class_name"].tolist() == [names[e[1]] for e in expected]
    np.testing.assert_allclose(det.xyxy, np.stack([e[2] for e in expected]), atol=1e-3)


def test_raw_detections_validates_shapes_and_reports_bytes():
    raw = _raw(np.zeros((4, 4)), np.zeros((4, 3)))
    assert raw.nbytes() == 4 * 4 * 4 + 4 * 3 * 4 + 4 * 4
    with pytest.raises(ValueError, match="box_scores"):
        RawDetections(
            np.zeros((4, 4), np.float32), np.zeros((4, 3), np.float32), np.zeros(3, np.float32), (1, 1)
        )
