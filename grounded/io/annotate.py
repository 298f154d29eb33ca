"""Draw detections (mask, box, "label score") on an RGB image with supervision's annotators.

Colours are chosen by ``class_id`` from supervision's default palette (``ColorLookup.CLASS``), so a
class keeps its colour across images and re-thresholding, and :func:`class_color` gives the UI the
same colour for its legend.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

__all__ = ["annotate", "class_color", "detection_labels"]

_PALETTE = sv.ColorPalette.DEFAULT


def class_color(class_id: int) -> str:
    """Hex RGB colour (``"#a351fb"``) used for ``class_id`` in :func:`annotate`."""
    return _PALETTE.by_idx(int(class_id)).as_hex()


def detection_labels(detections: sv.Detections) -> list[str]:
    """One ``"dog 0.87"`` label per detection: class name (or id) and confidence (when set)."""
    names = detections.data.get("class_name")
    if names is None:
        ids = detections.class_id if detections.class_id is not None else range(len(detections))
        names = [str(int(i)) for i in ids]
    if detections.confidence is None:
        return [str(name) for name in names]
    return [f"{name} {score:.2f}" for name, score in zip(names, detections.confidence.tolist(), strict=True)]


def annotate(image: np.ndarray, detections: sv.Detections, *, opacity: float = 0.5,
             labels: list[str] | None = None) -> np.ndarray:
    """Overlay masks (if any), boxes and labels; returns a new H x W x 3 uint8 RGB image.

    Args:
        image: H x W x 3 uint8 RGB, never modified.
        detections: xyxy in absolute pixels of ``image``; optional N x H x W bool ``mask``.
        opacity: mask opacity in [0, 1].
        labels: one text per detection (default :func:`detection_labels`: ``"dog 0.87"``).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"annotate expects an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}; "
                         "convert it with grounded.io.images.load_image")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if len(detections) == 0:
        return image.copy()
    height, width = image.shape[:2]
    if detections.mask is not None and detections.mask.shape[1:] != (height, width):
        raise ValueError(f"masks are {detections.mask.shape[1:]} but the image is {(height, width)} (H, W)")
    lookup = sv.ColorLookup.CLASS if detections.class_id is not None else sv.ColorLookup.INDEX
    thickness = sv.calculate_optimal_line_thickness(resolution_wh=(width, height))
    text_scale = sv.calculate_optimal_text_scale(resolution_wh=(width, height))
    # supervision draws numpy scenes as BGR (OpenCV convention): flip RGB -> BGR and back, so the
    # drawn colours are exactly class_color(class_id). The flip copies, leaving `image` untouched.
    scene = np.ascontiguousarray(image[:, :, ::-1])  # H x W x 3, BGR
    if detections.mask is not None:
        scene = sv.MaskAnnotator(color=_PALETTE, opacity=opacity, color_lookup=lookup).annotate(
            scene, detections)
    scene = sv.BoxAnnotator(color=_PALETTE, thickness=thickness, color_lookup=lookup).annotate(
        scene, detections)
    labeler = sv.LabelAnnotator(color=_PALETTE, text_scale=text_scale, text_thickness=max(1, thickness // 2),
                                text_padding=2 + 2 * thickness, color_lookup=lookup, smart_position=True)
    labels = detection_labels(detections) if labels is None else labels
    scene = labeler.annotate(scene, detections, labels=labels)
    return np.ascontiguousarray(scene[:, :, ::-1])  # BGR -> RGB
