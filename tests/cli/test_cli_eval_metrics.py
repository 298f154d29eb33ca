"""Metric math of grounded.cli.evaluate with injected predictions (no model): values computed by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import supervision as sv
from cli_helpers import SQUARE, ShapesDataset, square_mask

from grounded.cli.evaluate import (
    METRIC_NAMES,
    box_prompted_ious,
    category_classes,
    coco_metrics,
    detections_to_results,
    evaluate,
)
from grounded.io.export import mask_to_rle


def _result(ann: dict[str, Any], mask: np.ndarray, *, dx: int = 0, score: float = 1.0) -> dict[str, Any]:
    """A prediction equal to a GT annotation, optionally shifted right by ``dx`` pixels."""
    x, y, w, h = ann["bbox"]
    shifted = np.roll(mask, dx, axis=1)
    assert shifted.sum() == mask.sum(), "shift must keep the object inside the image"
    return {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": [x + dx, y, w, h],
            "segmentation": mask_to_rle(shifted), "score": score}


def _gt_results(shapes: ShapesDataset) -> list[dict[str, Any]]:
    return [_result(ann, shapes.masks[ann["id"]]) for ann in shapes.gt["annotations"]]


def _masks_by_image(shapes: ShapesDataset, *, category_id: int | None = None, dx: int = 0) -> dict:
    out: dict[int, list[np.ndarray]] = {}
    for ann in sorted(shapes.gt["annotations"], key=lambda a: a["id"]):
        if category_id is None or ann["category_id"] == category_id:
            out.setdefault(ann["image_id"], []).append(np.roll(shapes.masks[ann["id"]], dx, axis=1))
    return {image_id: np.stack(masks) for image_id, masks in out.items()}


def test_predictions_equal_to_ground_truth_score_one(shapes: ShapesDataset) -> None:
    report = evaluate(shapes.gt, _gt_results(shapes), box_prompted=_masks_by_image(shapes))
    for metrics in (report.bbox, report.segm):
        assert metrics["AP"] == pytest.approx(1.0)
        assert metrics["AP50"] == pytest.approx(1.0)
        assert metrics["AP75"] == pytest.approx(1.0)
        assert metrics["AR100"] == pytest.approx(1.0)
    assert report.miou == pytest.approx(1.0)
    assert report.miou_instances == 8 and report.instances == 8 and report.images == 4


def test_square_shifted_by_10px_has_iou_one_third(shapes: ShapesDataset) -> None:
    gt = square_mask(10, 10)[None]  # 1 x H x W
    shifted = square_mask(20, 10)[None]  # overlap 10 x 20 = 200, union 400 + 400 - 200 = 600
    assert box_prompted_ious(gt, shifted)[0] == pytest.approx(200 / 600)
    report = evaluate(shapes.gt, [], box_prompted=_masks_by_image(shapes, category_id=1, dx=10),
                      category_ids=[1])
    assert report.miou == pytest.approx(1 / 3) and report.miou_instances == 4


def test_shift_of_4px_counts_at_four_of_ten_iou_thresholds(shapes: ShapesDataset) -> None:
    # IoU of a 20 x 20 square shifted 4 px: 16 * 20 / (800 - 320) = 2/3, which passes the COCO IoU
    # thresholds 0.50, 0.55, 0.60 and 0.65 only: the square's AP is 4/10, AP50 1, AP75 0.
    assert 16 * SQUARE / (2 * SQUARE**2 - 16 * SQUARE) == pytest.approx(2 / 3)
    results = [_result(ann, shapes.masks[ann["id"]], dx=4 if ann["category_id"] == 1 else 0)
               for ann in shapes.gt["annotations"]]
    squares = evaluate(shapes.gt, results, category_ids=[1])
    both = evaluate(shapes.gt, results)
    for metrics in (squares.bbox, squares.segm):
        assert metrics["AP"] == pytest.approx(0.4)
        assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(0.0)
    for metrics in (both.bbox, both.segm):  # the disc is perfect: mean over the two categories
        assert metrics["AP"] == pytest.approx((0.4 + 1.0) / 2)
        assert metrics["AP75"] == pytest.approx(0.5)


def test_a_missed_object_lowers_recall(shapes: ShapesDataset) -> None:
    squares = shapes.anns(1)
    results = [_result(ann, shapes.masks[ann["id"]]) for ann in squares[:3]]  # 3 of 4 found
    report = evaluate(shapes.gt, results, category_ids=[1])
    for metrics in (report.bbox, report.segm):
        assert metrics["AR100"] == pytest.approx(3 / 4)
        # precision is 1 up to recall 3/4 and 0 beyond: 76 of COCO's 101 recall points (0, .01, .., .75)
        assert metrics["AP"] == pytest.approx(76 / 101)


def test_false_positive_ranked_first_lowers_precision(shapes: ShapesDataset) -> None:
    squares = shapes.anns(1)
    results = [_result(ann, shapes.masks[ann["id"]], score=0.5) for ann in squares]
    wrong = _result(squares[0], shapes.masks[squares[0]["id"]], dx=15, score=0.9)  # IoU 5/35 < 0.5
    report = evaluate(shapes.gt, [*results, wrong], category_ids=[1])
    # ranked: FP (0.9) then 4 TPs; interpolated precision is 4/5 at every recall point
    assert report.bbox["AP"] == pytest.approx(0.8)
    assert report.bbox["AR100"] == pytest.approx(1.0)


def test_no_predictions_gives_zero_not_missing(shapes: ShapesDataset) -> None:
    metrics = coco_metrics(shapes.gt, [], iou_type="segm")
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics["APl"] is None  # no large objects in the ground truth: COCO's -1 -> None


def test_detections_map_to_category_ids_by_name() -> None:
    mask = np.zeros((2, 10, 12), dtype=bool)
    mask[0, 1:4, 2:6] = True
    detections = sv.Detections(
        xyxy=np.array([[2, 1, 6, 4], [0, 0, 3, 3]], np.float32), mask=mask,
        confidence=np.array([0.9, 0.4], np.float32), class_id=np.array([1, 0]),
        data={"class_name": np.array(["disc", "unknown"])})
    (result,) = detections_to_results(detections, image_id=7, category_of={"square": 1, "disc": 3})
    assert result["category_id"] == 3 and result["image_id"] == 7
    assert result["bbox"] == [2.0, 1.0, 4.0, 3.0]
    assert result["score"] == pytest.approx(0.9)
    assert isinstance(result["segmentation"]["counts"], str)


def test_category_names_become_prompt_classes() -> None:
    classes = category_classes([{"id": 5, "name": "Traffic_Light"}, {"id": 2, "name": "dog"}])
    assert classes == {"dog": 2, "traffic light": 5}
    assert list(classes) == ["dog", "traffic light"]  # category id order
    with pytest.raises(ValueError, match="both read as the class 'dog'"):
        category_classes([{"id": 1, "name": "dog"}, {"id": 2, "name": "Dog"}])


def test_report_dict_and_table(shapes: ShapesDataset) -> None:
    report = evaluate(shapes.gt, _gt_results(shapes), box_prompted=_masks_by_image(shapes))
    data = report.to_dict()
    assert {"images", "instances", "classes", "bbox", "segm", "box_prompted", "skipped"} <= set(data)
    assert data["box_prompted"] == {"miou": pytest.approx(1.0), "instances": 8}
    table = report.format_table()
    assert "AP50" in table and "box-prompted mIoU" in table and "1.000" in table
