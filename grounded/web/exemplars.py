"""The HTTP API's optional ``exemplar_boxes`` -> ``ExemplarBoxes`` (SAM 3's example boxes), strictly."""

from __future__ import annotations

import json
import math
from typing import Any

from grounded.detectors.base import ExemplarBoxes

__all__ = ["MAX_EXEMPLAR_BOXES", "parse_exemplars"]


# The most exemplar boxes one request may send.
MAX_EXEMPLAR_BOXES = 64


def parse_exemplars(value: Any) -> ExemplarBoxes | None:
    """The HTTP API's optional ``exemplar_boxes``: ``{"positive": [[x0, y0, x1, y1], ...], "negative":
    [...]}`` (absolute pixels of the image; either list may be omitted), or that object as a JSON
    string; ``None``/``""``/``{}`` mean none. SAM 3 presets only (others refuse them clearly)."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError('exemplar_boxes must be JSON like {"positive": [[x0, y0, x1, y1]], '
                             '"negative": []}') from None
    if not isinstance(value, dict) or set(value) - {"positive", "negative"}:
        raise ValueError('exemplar_boxes must be an object with "positive" and/or "negative" lists of '
                         "[x0, y0, x1, y1] pixel boxes")
    for name in ("positive", "negative"):
        boxes = value.get(name) or []
        if not isinstance(boxes, list) or any(not isinstance(box, list) or len(box) != 4 for box in boxes):
            raise ValueError(f"exemplar_boxes {name!r} must be a list of [x0, y0, x1, y1] pixel boxes")
        for box in boxes:
            for coordinate in box:
                _check_number(name, coordinate)
    total = len(value.get("positive") or []) + len(value.get("negative") or [])
    if total > MAX_EXEMPLAR_BOXES:
        raise ValueError(f"{total} exemplar boxes sent; the limit is {MAX_EXEMPLAR_BOXES}")
    return ExemplarBoxes.from_lists(value.get("positive"), value.get("negative"))


def _check_number(name: str, value: Any) -> None:
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        raise ValueError(f"exemplar_boxes {name!r} coordinates must be finite numbers, got {value!r}")
