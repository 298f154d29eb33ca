"""The logic behind the Gradio app, with no gradio import, so every piece is unit-testable.

``app.py`` only wires components to these functions. One browser session goes:

1. :func:`check_upload` refuses a file that is not an image as soon as it is uploaded;
   :func:`segment` decodes it (pixel limit checked from the header, before decoding), runs the
   pipeline and keeps everything in a :class:`Session` (held per tab by ``sessions.SessionStore``).
2. :func:`refilter` applies new thresholds to the same image and prompt; the pipeline's caches make
   it model-free, and the user's corrections are re-applied (``grounded.web.edits``).
3. Corrections (``grounded.web.corrections``): add by box or point, delete, relabel, refine with
   clicks, choose among SAM's candidates, reset, undo, redo, all from the cached image embedding.
4. Views of a session (``grounded.web.views``, ``grounded.web.bundle``): :func:`result_json`,
   :func:`table_rows`, :func:`annotated_value`, :func:`overlay_preview` and :func:`write_bundle`.

The presets and their loading live in ``grounded.web.provider`` (re-exported here).

Every user mistake raises ``ValueError`` with a message that says what to do; the app shows it.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from grounded.config import PipelineConfig
from grounded.detectors.base import ExemplarBoxes
from grounded.io.images import load_image
from grounded.pipeline import GroundedSAM
from grounded.web.budget import check_request
from grounded.web.bundle import write_bundle
from grounded.web.corrections import (
    add_box,
    add_click,
    add_point,
    apply_click,
    box_corner,
    choose_candidate,
    delete_instance,
    reapply,
    redo,
    relabel_instance,
    reset_instance,
    undo,
)
from grounded.web.edits import Click, predicted_keys
from grounded.web.provider import OFFLINE_MISSING, PipelineProvider, PresetUnavailableError
from grounded.web.sessions import Session, SessionStore
from grounded.web.views import (
    TABLE_HEADERS,
    UNTRAINED_NOTE,
    annotated_value,
    full_overlay,
    instance_choices,
    models_note,
    overlay_preview,
    overlay_with_clicks,
    precision_fields,
    precision_note,
    preview_scale,
    result_json,
    table_rows,
    to_preview,
)

__all__ = [
    "MAX_DETECTIONS_LIMIT", "MAX_PROMPT_CHARS", "OFFLINE_MISSING", "TABLE_HEADERS", "UNTRAINED_NOTE",
    "Click", "PipelineProvider", "PresetUnavailableError", "SegmentOptions", "Session", "parse_bool",
    "add_box", "add_click", "add_point", "apply_click", "annotated_value", "box_corner", "check_upload",
    "choose_candidate", "delete_instance", "discarded_note", "drop_empty", "full_overlay", "image_name_of",
    "instance_choices", "models_note", "overlay_preview", "overlay_with_clicks", "precision_fields",
    "precision_note", "preview_scale", "redo", "refilter", "relabel_instance", "reset_instance",
    "resolve_image", "result_json", "segment", "table_rows", "to_preview", "undo", "write_bundle",
]

MAX_PROMPT_CHARS = 2000


# ---------------------------------------------------------------------------------------- inputs
def resolve_image(payload: Any, *, upload_dir: str | os.PathLike[str], max_bytes: int) -> str | bytes:
    """What a client sent as the image -> a file path inside ``upload_dir``, or encoded bytes.

    ``payload`` is gradio's raw file payload (``{"path": ..., "url": ...}``), a base64 ``data:`` URL
    or a path string. Nothing is decoded here: ``load_image`` does that after its header pixel check,
    so base64 and URL inputs get the same decompression-bomb limit as uploads. Paths outside the
    upload folder are refused, so a client cannot make the server read its own files.
    """
    if payload is None:
        raise ValueError("no image: upload an image (or pick an example) first")
    if isinstance(payload, dict):
        url, path = payload.get("url"), payload.get("path")
        if isinstance(url, str) and url.startswith("data:"):
            return _decode_data_url(url, max_bytes)
        payload = path
    if isinstance(payload, str) and payload.startswith("data:"):
        return _decode_data_url(payload, max_bytes)
    if not isinstance(payload, str) or not payload:
        raise ValueError("image input holds neither a file nor a data: URL; send the file with "
                         "gradio_client.handle_file(path_or_url)")
    real, root = Path(payload).resolve(), Path(upload_dir).resolve()
    if not real.is_relative_to(root) or not real.is_file():
        raise ValueError("image is not a file uploaded to this app; send it with "
                         "gradio_client.handle_file(path_or_url) instead of naming a server path")
    size = real.stat().st_size
    if size > max_bytes:
        raise ValueError(f"image file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB")
    return str(real)


def _decode_data_url(url: str, max_bytes: int) -> bytes:
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ValueError("an image data: URL must be base64 encoded: data:image/png;base64,...")
    if len(data) * 3 // 4 > max_bytes:
        raise ValueError(f"image is {len(data) * 3 / 4e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB")
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        raise ValueError("the image data: URL is not valid base64") from None


def image_name_of(payload: Any, default: str = "image.png") -> str:
    """The uploaded file's base name (for the COCO ``file_name``), or ``default``."""
    name = payload.get("orig_name") if isinstance(payload, dict) else None
    return os.path.basename(str(name)) if name else default


# The most detections one request may ask for (the page slider's maximum).
MAX_DETECTIONS_LIMIT = 300


@dataclass(frozen=True)
class SegmentOptions:
    """The page's sliders and switches, validated. ``nms_iou=1.0`` turns NMS off."""

    box_threshold: float
    text_threshold: float
    nms_iou: float
    max_detections: int
    multimask: bool = False

    def __post_init__(self) -> None:
        # Strict: HTTP clients send JSON, where true is not 1 and "no" is not True.
        for name in ("box_threshold", "text_threshold", "nms_iou"):
            value = _number(name, getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
        count = _number("max_detections", self.max_detections)
        if count != int(count) or count < 1:
            raise ValueError(f"max_detections must be a whole number of at least 1, got {count!r}")
        if count > MAX_DETECTIONS_LIMIT:  # each detection is a full H x W mask: a client can't lift this
            raise ValueError(f"max_detections is {count:g}; the limit is {MAX_DETECTIONS_LIMIT}")
        object.__setattr__(self, "multimask", parse_bool("multimask", self.multimask))

    @classmethod
    def from_config(cls, config: PipelineConfig) -> SegmentOptions:
        nms = 1.0 if config.nms_iou is None else config.nms_iou
        count = min(config.max_detections, MAX_DETECTIONS_LIMIT)
        return cls(config.box_threshold, config.text_threshold, nms, count, config.multimask)

    def predict_kwargs(self) -> dict[str, Any]:
        return {"box_threshold": float(self.box_threshold), "text_threshold": float(self.text_threshold),
                "nms_iou": float(self.nms_iou), "max_detections": int(self.max_detections),
                "multimask": bool(self.multimask)}


def _number(name: str, value: Any) -> float:
    """A finite int or float (not a bool, not a string), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large to be a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def parse_bool(name: str, value: Any) -> bool:
    """``True``/``False`` (or the JSON-ish strings "true"/"false"), else a ValueError naming ``name``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name} must be true or false, got {value!r}")



# --------------------------------------------------------------------------------------- session
def segment(provider: PipelineProvider, image: Any, prompt: str, *, preset: str | None,
            options: SegmentOptions, image_name: str = "image.png",
            request_bytes: int | None = None, exemplars: ExemplarBoxes | None = None) -> Session:
    """Run the pipeline on ``image`` (path, bytes or array) for ``prompt``; see ``GroundedSAM.predict``.
    ``exemplars`` (from :func:`parse_exemplars`) go to the detector as example boxes (SAM 3 only).
    Instances whose mask is empty (zero area) are left out and counted in ``dropped_empty``."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be text, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if preset is not None and preset not in provider.names:
        raise ValueError(f"unknown preset {preset!r}; choose one of {provider.names}")
    classes = GroundedSAM.classes_of(prompt)  # ValueError for an empty prompt, before loading or decoding
    pipeline = provider.get(preset)
    rgb = load_image(image, max_pixels=pipeline.config.max_pixels)
    if request_bytes is not None:  # admission control, before any model runs
        check_request(rgb.shape[0], rgb.shape[1], int(options.max_detections), request_bytes)
    boxes = {} if exemplars is None else {"positive_boxes": exemplars.boxes[exemplars.labels],
                                          "negative_boxes": exemplars.boxes[~exemplars.labels]}
    detections, dropped = drop_empty(  # CompactMask
        pipeline.predict_compact(rgb, classes, **options.predict_kwargs(), **boxes))
    return Session(rgb, image_name, tuple(classes), preset or provider.default, pipeline.config, options,
                   detections, detections, models=pipeline.describe(),
                   keys=predicted_keys(detections), dropped_empty=dropped)


def refilter(provider: PipelineProvider, session: Session, options: SegmentOptions) -> Session:
    """The same image and prompt with new options, from the pipeline caches; the user's corrections
    are re-applied to the new prediction (an edited or added instance is kept)."""
    detections = provider.get(session.preset).predict_compact(session.image, list(session.classes),
                                                              **options.predict_kwargs())
    detections, dropped = drop_empty(detections)
    return reapply(session, detections, options, dropped_empty=dropped)


def drop_empty(detections: sv.Detections) -> tuple[sv.Detections, int]:
    """``detections`` without zero-area masks (e.g. on a 1 x 1 image), and how many were dropped."""
    if detections.mask is None or len(detections) == 0:
        return detections, 0
    keep = np.asarray(detections.mask.area) > 0  # N
    if keep.all():
        return detections, 0
    return detections[keep], int((~keep).sum())


def check_upload(payload: Any, *, upload_dir: str | os.PathLike[str], max_bytes: int,
                 max_pixels: int = 40_000_000) -> tuple[int, int]:
    """Refuse, at upload, a file that is not an image (a .txt renamed .png, an SVG, a truncated
    file) or one that is too large, with ``load_image``'s message; returns (width, height)."""
    source = resolve_image(payload, upload_dir=upload_dir, max_bytes=max_bytes)
    height, width = load_image(source, max_pixels=max_pixels).shape[:2]
    return width, height


def discarded_note(sessions: SessionStore, token: str | None, prefix: str = "") -> str:
    """A note when a new run replaces a result the user had corrected (its edits are not carried over)."""
    try:
        old = sessions.get(token) if token is not None else None
    except ValueError:  # expired: nothing to report
        return ""
    if old is None or not old.edits:
        return ""
    return f"{prefix}a new run starts afresh: the previous result's edits were discarded"
