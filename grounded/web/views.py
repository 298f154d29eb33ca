"""What the page shows of a session: the JSON, the table, the numbered legend and the overlay.

Every view reads ``session.detections`` (the result with the user's corrections), so the table, the
legend, the overlay, the JSON and the download always agree. Row ``i`` of the table is legend entry
``#i`` and instance ``#i`` everywhere. Long class names are shortened in the legend and on the overlay
(:func:`short_label`); the table and the JSON keep the full text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import cv2
import numpy as np
import supervision as sv

from grounded.io.annotate import annotate, class_color
from grounded.io.export import detections_to_dict
from grounded.web.edits import Click
from grounded.web.sessions import Session

__all__ = [
    "LABEL_CHARS", "PREVIEW_MAX_PIXELS", "TABLE_HEADERS", "annotated_value", "full_overlay",
    "instance_choices",
    "instance_labels", "marker_radius", "models_note", "overlay_preview", "overlay_with_clicks",
    "precision_fields", "precision_note", "preview_scale", "result_json", "short_label", "table_rows",
    "to_preview",
]

TABLE_HEADERS = ["#", "label", "detector score", "mask score", "box (x0, y0, x1, y1)", "area (px)"]
UNTRAINED_NOTE = "UNTRAINED tiny-random model: boxes and masks are meaningless (tests and smoke runs only)"
LABEL_CHARS = 24  # legend and overlay labels longer than this are shortened with "…"
# The page shows results at most this large (the full-resolution masks are in the download and the
# JSON): gradio expands every AnnotatedImage mask to ~50 bytes per pixel while encoding it.
PREVIEW_MAX_PIXELS = 1_500_000
_SELECTED = (255, 214, 0)  # the selected instance's outline on the overlay


def result_json(session: Session) -> dict[str, Any]:
    """``grounded.io.export.detections_to_dict``'s schema plus ``"untrained"``, ``"model"`` and
    ``"edited"`` (whether the user changed the prediction)."""
    result = detections_to_dict(session.detections, image_size=session.image_size, classes=session.classes)
    config = session.config
    result["untrained"] = config.untrained
    result["model"] = {"preset": session.preset, "config": config.name, "detector": config.detector.model,
                       "sam": config.sam.model_type, "sam_checkpoint": config.sam.checkpoint,
                       **precision_fields(session.models)}
    result["edited"] = bool(session.edits)
    return result


def precision_fields(models: Mapping[str, Any]) -> dict[str, str | None]:
    """``device``, ``detector_dtype`` and ``sam_dtype`` from ``GroundedSAM.describe()``."""
    detector, sam = models.get("detector", {}), models.get("sam", {})
    return {"device": sam.get("device") or detector.get("device"), "detector_dtype": detector.get("dtype"),
            "sam_dtype": sam.get("dtype")}


def precision_note(models: Mapping[str, Any]) -> str:
    """``"cpu · detector float32 · SAM bfloat16"``, for the page's status line."""
    fields = precision_fields(models)
    if not fields["device"]:
        return ""
    return f"{fields['device']} · detector {fields['detector_dtype']} · SAM {fields['sam_dtype']}"


def models_note(session: Session) -> str:
    """``"preset tiny-random: detector tiny-random (float32) + SAM tiny (float32) on cpu"``."""
    fields, config = precision_fields(session.models), session.config
    detector = short_label(config.detector.model.rsplit("/", 1)[-1], 40)
    return (f"preset {session.preset}: detector {detector} ({fields['detector_dtype'] or '?'}) + "
            f"SAM {config.sam.model_type} ({fields['sam_dtype'] or '?'}) on {fields['device'] or '?'}")


def short_label(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` cut to ``limit`` characters, ending in "…" when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def instance_labels(detections: sv.Detections) -> list[str]:
    """``"#0 dog 0.87"`` per instance: the table's ``#``, the shortened class name and the score."""
    names = detections.data.get("class_name", [])
    return [f"#{i} {short_label(str(name))} {score:.2f}"
            for i, (name, score) in enumerate(zip(names, detections.confidence.tolist(), strict=True))]


def table_rows(detections: sv.Detections) -> list[list[Any]]:
    """One row per detection, columns as :data:`TABLE_HEADERS` (labels stay plain, full text)."""
    names = detections.data.get("class_name", [])
    mask_scores = detections.data.get("mask_score")
    areas = detections.mask.sum(axis=(1, 2)).tolist() if detections.mask is not None else [None] * len(names)
    rows = []
    for i, (name, score, box, area) in enumerate(
            zip(names, detections.confidence.tolist(), detections.xyxy.tolist(), areas, strict=True)):
        mask_score = None if mask_scores is None else round(float(mask_scores[i]), 3)
        box_text = ", ".join(f"{v:.1f}" for v in box)
        area = None if area is None else int(area)
        rows.append([i, str(name), round(score, 3), mask_score, box_text, area])
    return rows


def instance_choices(detections: sv.Detections) -> list[tuple[str, int]]:
    """``("#0 dog 0.87", 0)`` pairs for the instance picker."""
    return [(label, i) for i, label in enumerate(instance_labels(detections))]


AnnotatedValue = tuple[np.ndarray, Iterable[tuple[np.ndarray, str]]]  # (image, (mask, label) one at a time)


def preview_scale(image_size: tuple[int, int]) -> float:
    """Factor (<= 1) from original pixels to the page's preview pixels."""
    height, width = image_size
    return min(1.0, (PREVIEW_MAX_PIXELS / max(height * width, 1)) ** 0.5)


def to_preview(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` (H x W x C or H x W) resized by ``scale``: area-averaged; masks use nearest."""
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    if image.dtype == bool:
        return cv2.resize(image.view(np.uint8), size, interpolation=cv2.INTER_NEAREST).view(bool)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def annotated_value(session: Session) -> tuple[AnnotatedValue, dict[str, str]]:
    """``gr.AnnotatedImage`` value ``(preview, ((mask, "#0 dog 0.87"), ...))`` and its label -> colour map.

    The masks are produced one at a time (a generator) at preview size, so the page never holds
    N full-size masks. Colours follow ``grounded.io.annotate.class_color``, as on the overlay.
    """
    detections = session.detections
    labels = instance_labels(detections)
    colors = {label: class_color(int(cid)) for label, cid in zip(labels, detections.class_id, strict=True)}
    scale = preview_scale(session.image_size)

    def masks() -> Iterator[tuple[np.ndarray, str]]:
        for i, label in enumerate(labels):
            # gradio uses the mask value as alpha: 0.55 keeps the photo visible under each mask
            yield to_preview(detections.mask[i], scale) * np.float32(0.55), label

    return (to_preview(session.image, scale), masks()), colors


def full_overlay(session: Session) -> np.ndarray:
    """The full-resolution overlay with the numbered, shortened labels (the download's overlay.png)."""
    return annotate(session.image, session.detections, labels=instance_labels(session.detections))


def marker_radius(shape: tuple[int, ...]) -> int:
    """Click-marker radius in pixels of an H x W view: 1/60 of its longer side, at least 6, so it shows
    at a similar size on the page whatever the image size."""
    return max(6, round(max(shape[:2]) / 60))


def overlay_preview(session: Session, selected: int | None = None) -> np.ndarray:
    """The overlay (drawn at full resolution) at preview size: numbered labels, the ``selected``
    instance outlined, the refine clicks and a box's first corner marked."""
    scale = preview_scale(session.image_size)
    detections = session.detections
    overlay = to_preview(full_overlay(session), scale)
    if isinstance(selected, int) and 0 <= selected < len(detections):
        mask = to_preview(detections.mask[selected], scale)
        overlay = _outline(overlay, mask, detections.xyxy[selected] * scale)
    overlay = overlay_with_clicks(overlay, session.clicks, scale=scale)
    if session.corner is not None:
        overlay = _corner(overlay, (session.corner[0] * scale, session.corner[1] * scale))
    return overlay


def _outline(overlay: np.ndarray, mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(overlay).copy()
    thickness = max(2, round(max(out.shape[:2]) / 250))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    for color, width in (((255, 255, 255), thickness + 2), (_SELECTED, thickness)):
        cv2.drawContours(out, contours, -1, color, width, lineType=cv2.LINE_AA)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, max(1, width - 1), lineType=cv2.LINE_8)
    return out


def _corner(overlay: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    out = np.ascontiguousarray(overlay).copy()
    radius = marker_radius(out.shape)
    center = (int(round(point[0])), int(round(point[1])))
    for color, width in (((255, 255, 255), 5), ((20, 20, 20), 2)):
        cv2.drawMarker(out, center, color, cv2.MARKER_CROSS, 3 * radius, width)
    return out


def overlay_with_clicks(overlay: np.ndarray, clicks: Mapping[int, tuple[Click, ...]], *,
                        scale: float = 1.0) -> np.ndarray:
    """Draw refine clicks (original-image pixels, times ``scale``) on an H x W x 3 overlay: green discs
    add, red discs remove, white-ringed, :func:`marker_radius` large (a copy)."""
    if not any(clicks.values()):
        return overlay
    out = np.ascontiguousarray(overlay).copy()
    radius = marker_radius(out.shape)
    for click in (c for group in clicks.values() for c in group):
        center = (int(round(click.x * scale)), int(round(click.y * scale)))
        ring = radius + max(2, radius // 4)
        cv2.circle(out, center, ring, (255, 255, 255), thickness=-1, lineType=cv2.LINE_AA)
        color = (40, 200, 60) if click.positive else (230, 40, 40)
        cv2.circle(out, center, radius, color, thickness=-1, lineType=cv2.LINE_AA)
    return out
