"""Thresholds, one label per box, NMS and a cap: ``RawDetections`` -> ``sv.Detections``. Pure numpy, cheap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from grounded.detectors.grounding_dino import RawDetections

__all__ = ["select_detections"]


def select_detections(
    raw: RawDetections,
    classes: Sequence[str],
    *,
    box_threshold: float,
    text_threshold: float,
    nms_iou: float | None,
    class_agnostic_nms: bool = False,
    max_detections: int = 100,
) -> sv.Detections:
    """Keep confident queries, give each exactly one class from ``classes``, suppress duplicates.

    A query is kept when its box score (max over all caption tokens, Grounding DINO's
    ``box_threshold`` semantics) is ``> box_threshold``. Its class is the phrase with the highest
    class score (max over that phrase's tokens), and that score must be ``> text_threshold``. Kept
    boxes are clipped to the image, sorted by score, de-duplicated by NMS (per class, or across
    classes with ``class_agnostic_nms``) and capped at ``max_detections``.

    Args:
        raw: the detector's output for one image and ``classes``.
        classes: the C class names the detector scored, in the same order.
        box_threshold, text_threshold: in [0, 1].
        nms_iou: IoU above which the lower-scored of two boxes is dropped; ``None`` skips NMS.
        class_agnostic_nms: suppress across classes too (one box per object whatever its label).
        max_detections: keep at most this many, highest scores first (>= 0).

    Returns:
        ``sv.Detections`` with ``xyxy`` (N x 4 float32, absolute pixels of the original image,
        clipped), ``confidence`` (N float32 box score), ``class_id`` (N int64 index into
        ``classes``), ``data["class_name"]`` (N str) and ``data["query_index"]`` (N int64, the row
        of ``raw`` each detection came from: its mask for mask-predicting detectors), sorted by
        confidence descending. No
        detection -> an empty ``sv.Detections`` with the same fields and data keys.

    Raises:
        ValueError: a threshold outside [0, 1], ``max_detections < 0``, or ``classes`` not matching
            ``raw``'s class columns.
    """
    for name, value in (
        ("box_threshold", box_threshold),
        ("text_threshold", text_threshold),
        ("nms_iou", nms_iou),
    ):
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if int(max_detections) != max_detections or max_detections < 0:
        raise ValueError(f"max_detections must be a non-negative integer, got {max_detections}")
    if raw.num_classes == 0:
        raise ValueError("detections carry no class columns; detect() needs at least one class")
    if len(classes) != raw.num_classes:
        raise ValueError(
            f"{len(classes)} class names given for detections scored over {raw.num_classes} classes; "
            "pass the same class list to detect() and select_detections()"
        )

    class_id = raw.class_scores.argmax(axis=1)  # Q, one class per query
    class_score = np.take_along_axis(raw.class_scores, class_id[:, None], axis=1)[:, 0]  # Q
    keep = (raw.box_scores > box_threshold) & (class_score > text_threshold)
    index = np.flatnonzero(keep)
    index = index[np.argsort(-raw.box_scores[index], kind="stable")]  # N, best first

    height, width = raw.image_size
    xyxy = raw.boxes[index].astype(np.float32)  # N x 4
    np.clip(xyxy, 0.0, np.array([width, height, width, height], dtype=np.float32), out=xyxy)
    confidence = raw.box_scores[index].astype(np.float32)
    class_id = class_id[index].astype(np.int64)

    names = np.asarray(list(classes), dtype=str)
    if len(index) == 0:
        empty = sv.Detections.empty()
        empty.data["class_name"] = np.empty(0, dtype=names.dtype)
        empty.data["query_index"] = np.empty(0, dtype=np.int64)
        return empty
    detections = sv.Detections(
        xyxy=xyxy, confidence=confidence, class_id=class_id,
        data={"class_name": names[class_id], "query_index": index.astype(np.int64)},
    )
    if nms_iou is not None:  # supervision keeps the survivors in order (best first)
        detections = detections.with_nms(threshold=float(nms_iou), class_agnostic=class_agnostic_nms)
    return detections[: int(max_detections)]
