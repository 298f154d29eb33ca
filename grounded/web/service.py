"""The logic behind the Gradio app, with no gradio import, so every piece is unit-testable.

``app.py`` only wires components to these functions. One browser session goes:

1. :func:`segment` decodes the upload (pixel limit checked from the header, before decoding), runs
   the pipeline and keeps everything in a :class:`Session` (held per tab in ``gr.State``).
2. :func:`refilter` applies new thresholds to the same image and prompt; the pipeline's caches make
   it model-free (no detector or SAM encoder run).
3. :func:`add_click` / :func:`reset_instance`: click-to-refine one instance from the cached embedding.
4. Views of a session: :func:`result_json` (the shared JSON schema), :func:`table_rows`,
   :func:`annotated_value` (``gr.AnnotatedImage``), :func:`overlay_with_clicks` and
   :func:`write_bundle` (the zip download).

Every user mistake raises ``ValueError`` with a message that says what to do; the app shows it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import math
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv
from PIL import Image

from grounded.config import PIPELINE_PRESETS, PipelineConfig, load_config
from grounded.detectors.base import ExemplarBoxes
from grounded.io.annotate import annotate, class_color, detection_labels
from grounded.io.export import CocoBuilder, detections_to_dict, save_mask_png
from grounded.io.files import label_slug
from grounded.io.images import load_image
from grounded.masks import replace_mask
from grounded.pipeline import GroundedSAM
from grounded.web.budget import check_request
from grounded.web.sessions import Click, Session
from sam_core.hub import HubAccessDenied

__all__ = [
    "MAX_DETECTIONS_LIMIT", "TABLE_HEADERS", "Click", "PipelineProvider", "PresetUnavailableError",
    "SegmentOptions", "Session", "parse_bool",
    "add_click", "annotated_value", "image_name_of", "instance_choices", "overlay_with_clicks", "refilter",
    "reset_instance", "resolve_image", "result_json", "segment", "table_rows", "write_bundle",
]

_LOG = logging.getLogger(__name__)
MAX_PROMPT_CHARS = 2000
TABLE_HEADERS = ["#", "label", "detector score", "mask score", "box (x0, y0, x1, y1)", "area (px)"]
UNTRAINED_NOTE = "UNTRAINED tiny-random model: boxes and masks are meaningless (tests and smoke runs only)"


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



# ------------------------------------------------------------------------------------- pipelines
class PipelineProvider:
    """Named pipelines (the page's presets), each built on first use, then kept. Thread-safe.

    Args:
        builders: preset name -> zero-argument function returning a ``GroundedSAM``.
        configs: preset name -> its config, when known before building (for the untrained notice).
        default: the preset selected on the page (the first one when omitted).
    """

    def __init__(self, builders: Mapping[str, Callable[[], GroundedSAM]], *,
                 configs: Mapping[str, PipelineConfig] | None = None, default: str | None = None) -> None:
        if not builders:
            raise ValueError("PipelineProvider needs at least one preset")
        self._builders = dict(builders)
        self._configs = dict(configs or {})
        self._loaded: dict[str, GroundedSAM] = {}
        self._locks = {name: threading.Lock() for name in self._builders}
        self.default = default if default is not None else next(iter(self._builders))
        if self.default not in self._builders:
            raise ValueError(f"default preset {self.default!r} is not one of {self.names}")

    @classmethod
    def from_pipeline(cls, pipeline: GroundedSAM, *, name: str | None = None) -> PipelineProvider:
        """One already-built pipeline is the only choice."""
        name = name or pipeline.config.name
        provider = cls({name: lambda: pipeline}, configs={name: pipeline.config})
        provider._loaded[name] = pipeline
        return provider

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | PipelineConfig = "default",
                    **overrides: Any) -> PipelineProvider:
        """The given config (the default choice) plus every other real pipeline preset (``fast``:
        MobileSAM, ``hq``: SAM-HQ, ``quality``: DINO-B + ViT-H, ...), each loaded on first use. An
        untrained config is offered alone. ``overrides`` (device, dtype, ...) go to all."""
        base = load_config(config)
        configs = {base.name: base}
        if not base.untrained:
            configs.update({name: cfg for name, cfg in PIPELINE_PRESETS.items()
                            if not cfg.untrained and name != base.name})
        builders = {name: _builder(cfg, overrides) for name, cfg in configs.items()}
        return cls(builders, configs=configs, default=base.name)

    @property
    def names(self) -> list[str]:
        return list(self._builders)

    def config(self, name: str) -> PipelineConfig | None:
        """The preset's config if known without building it (``None`` for opaque builders)."""
        return self._loaded[name].config if name in self._loaded else self._configs.get(name)

    def get(self, name: str | None = None) -> GroundedSAM:
        """The pipeline for preset ``name`` (default preset when ``None``), building it once."""
        name = self.default if name is None else name
        if name not in self._builders:
            raise ValueError(f"unknown preset {name!r}; choose one of {self.names}")
        with self._locks[name]:
            if name not in self._loaded:
                try:
                    self._loaded[name] = self._builders[name]()
                except Exception as exc:  # the details (paths, hub errors) go to the server log only
                    _LOG.warning("preset %r could not be loaded: %s", name, exc)
                    denied = _access_denied(exc)
                    if denied is not None:  # gated weights: the one sentence says what to do (no paths)
                        raise PresetUnavailableError(
                            f"preset {name!r} could not be loaded: {denied}") from exc
                    raise PresetUnavailableError(
                        f"preset {name!r} could not be loaded on this server (its weights are not "
                        "available); choose another preset or ask the operator") from exc
            return self._loaded[name]


class PresetUnavailableError(ValueError):
    """A preset's models failed to load; the cause (``__cause__``) holds the details for the operator."""


def _access_denied(error: BaseException | None) -> str | None:
    """The Hub's gated-model sentence if ``error`` or its causes hold a ``HubAccessDenied``."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, HubAccessDenied):
            return str(error)
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _builder(config: PipelineConfig, overrides: dict[str, Any]) -> Callable[[], GroundedSAM]:
    return lambda: GroundedSAM.from_config(config, **overrides)


# --------------------------------------------------------------------------------------- session
def segment(provider: PipelineProvider, image: Any, prompt: str, *, preset: str | None,
            options: SegmentOptions, image_name: str = "image.png",
            request_bytes: int | None = None, exemplars: ExemplarBoxes | None = None) -> Session:
    """Run the pipeline on ``image`` (path, bytes or array) for ``prompt``; see ``GroundedSAM.predict``.
    ``exemplars`` (from :func:`parse_exemplars`) go to the detector as example boxes (SAM 3 only)."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be text, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    pipeline = provider.get(preset)
    classes = pipeline.classes_of(prompt)  # ValueError for an empty prompt, before decoding
    rgb = load_image(image, max_pixels=pipeline.config.max_pixels)
    if request_bytes is not None:  # admission control, before any model runs
        check_request(rgb.shape[0], rgb.shape[1], int(options.max_detections), request_bytes)
    boxes = {} if exemplars is None else {"positive_boxes": exemplars.boxes[exemplars.labels],
                                          "negative_boxes": exemplars.boxes[~exemplars.labels]}
    detections = pipeline.predict_compact(rgb, classes, **options.predict_kwargs(), **boxes)  # CompactMask
    return Session(rgb, image_name, tuple(classes), preset or provider.default, pipeline.config, options,
                   detections, detections, models=pipeline.describe())


def refilter(provider: PipelineProvider, session: Session, options: SegmentOptions) -> Session:
    """The same image and prompt with new options; served from the pipeline caches (refinements reset)."""
    detections = provider.get(session.preset).predict_compact(session.image, list(session.classes),
                                                              **options.predict_kwargs())
    return dataclasses.replace(session, options=options, predicted=detections, detections=detections,
                               clicks={})


def add_click(provider: PipelineProvider, session: Session, *, index: int, x: float, y: float,
              positive: bool) -> Session:
    """Add a click to instance ``index``'s SAM prompt (its box + all its clicks) and re-decode its mask."""
    _check_index(session, index)
    height, width = session.image_size
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"click ({x:.0f}, {y:.0f}) is outside the {width} x {height} image")
    clicks = (*session.clicks.get(index, ()), Click(float(x), float(y), bool(positive)))
    points = np.array([[c.x, c.y] for c in clicks], dtype=np.float32)  # K x 2, xy pixels
    labels = np.array([int(c.positive) for c in clicks], dtype=np.int64)  # K, 1 = foreground
    refined = provider.get(session.preset).refine(session.image, session.detections, index, points, labels)
    return dataclasses.replace(session, detections=refined, clicks={**session.clicks, index: clicks})


def reset_instance(session: Session, index: int) -> Session:
    """Restore instance ``index``'s predicted mask and forget its clicks."""
    _check_index(session, index)
    detections = session.detections[np.arange(len(session.detections))]  # fancy indexing copies
    detections.mask = replace_mask(detections.mask, index, session.predicted.mask[index])
    detections.data["mask_score"][index] = session.predicted.data["mask_score"][index]
    clicks = {k: v for k, v in session.clicks.items() if k != index}
    return dataclasses.replace(session, detections=detections, clicks=clicks)


def _check_index(session: Session, index: Any) -> None:
    count = len(session.detections)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
        raise ValueError(f"pick an instance to refine (0..{count - 1}); got {index!r}" if count
                         else "there is no instance to refine: run a prompt that finds something first")


# ----------------------------------------------------------------------------------------- views
def result_json(session: Session) -> dict[str, Any]:
    """``grounded.io.export.detections_to_dict``'s schema plus ``"untrained"`` and ``"model"``."""
    result = detections_to_dict(session.detections, image_size=session.image_size, classes=session.classes)
    config = session.config
    result["untrained"] = config.untrained
    result["model"] = {"preset": session.preset, "config": config.name, "detector": config.detector.model,
                       "sam": config.sam.model_type, "sam_checkpoint": config.sam.checkpoint,
                       **precision_fields(session.models)}
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


def table_rows(detections: sv.Detections) -> list[list[Any]]:
    """One row per detection, columns as :data:`TABLE_HEADERS` (labels stay plain text)."""
    names = detections.data.get("class_name", [])
    mask_scores = detections.data.get("mask_score")
    areas = detections.mask.sum(axis=(1, 2)).tolist() if detections.mask is not None else [None] * len(names)
    rows = []
    for i, (name, score, box, area) in enumerate(
            zip(names, detections.confidence.tolist(), detections.xyxy.tolist(), areas, strict=True)):
        mask_score = None if mask_scores is None else round(float(mask_scores[i]), 3)
        box_text = ", ".join(f"{v:.1f}" for v in box)
        rows.append([i, str(name), round(score, 3), mask_score, box_text, area])
    return rows


def instance_choices(detections: sv.Detections) -> list[tuple[str, int]]:
    """``("#0 dog 0.87", 0)`` pairs for the instance picker."""
    return [(f"#{i} {label}", i) for i, label in enumerate(detection_labels(detections))]


AnnotatedValue = tuple[np.ndarray, Iterable[tuple[np.ndarray, str]]]  # (image, (mask, label) one at a time)

# The page shows results at most this large (the full-resolution masks are in the download and the
# JSON): gradio expands every AnnotatedImage mask to ~50 bytes per pixel while encoding it.
PREVIEW_MAX_PIXELS = 1_500_000


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
    """``gr.AnnotatedImage`` value ``(preview, ((mask, "dog 0.87"), ...))`` and its label -> colour map.

    The masks are produced one at a time (a generator) at preview size, so the page never holds
    N full-size masks. Colours follow ``grounded.io.annotate.class_color``, as on the overlay.
    """
    detections = session.detections
    labels = detection_labels(detections)
    colors = {label: class_color(int(cid)) for label, cid in zip(labels, detections.class_id, strict=True)}
    scale = preview_scale(session.image_size)

    def masks() -> Iterator[tuple[np.ndarray, str]]:
        for i, label in enumerate(labels):
            # gradio uses the mask value as alpha: 0.55 keeps the photo visible under each mask
            yield to_preview(detections.mask[i], scale) * np.float32(0.55), label

    return (to_preview(session.image, scale), masks()), colors


def overlay_preview(session: Session) -> np.ndarray:
    """The overlay (drawn at full resolution, mask by mask) at preview size, with the refine clicks."""
    scale = preview_scale(session.image_size)
    overlay = to_preview(annotate(session.image, session.detections), scale)
    return overlay_with_clicks(overlay, session.clicks, scale=scale)


def overlay_with_clicks(overlay: np.ndarray, clicks: Mapping[int, tuple[Click, ...]], *,
                        scale: float = 1.0) -> np.ndarray:
    """Draw refine clicks (original-image pixels, times ``scale``) on an H x W x 3 overlay: green discs
    add, red discs remove (a copy)."""
    if not any(clicks.values()):
        return overlay
    out = np.ascontiguousarray(overlay).copy()
    radius = max(3, round(min(out.shape[:2]) / 100))
    for click in (c for group in clicks.values() for c in group):
        center = (int(round(click.x * scale)), int(round(click.y * scale)))
        cv2.circle(out, center, radius + 2, (255, 255, 255), thickness=-1, lineType=cv2.LINE_AA)
        color = (40, 200, 60) if click.positive else (230, 40, 40)
        cv2.circle(out, center, radius, color, thickness=-1, lineType=cv2.LINE_AA)
    return out


def write_bundle(session: Session, overlay: np.ndarray, folder: str | os.PathLike[str]) -> Path:
    """Write ``grounded-sam-results.zip`` into ``folder`` and return its path.

    Contents: ``coco.json`` (COCO instances, compressed RLE), ``result.json`` (:func:`result_json`),
    ``masks/NNN_<label>.png`` (one lossless 0/255 PNG per instance) and ``overlay.png``.
    """
    detections = session.detections
    zip_path = Path(folder) / "grounded-sam-results.zip"
    with tempfile.TemporaryDirectory(prefix="gsam-bundle-") as tmp:
        root = Path(tmp)
        description = "grounded-sam predictions" + (f" ({UNTRAINED_NOTE})" if session.untrained else "")
        coco = CocoBuilder(description=description)
        coco.add_categories(session.classes)  # category id = class_id + 1, in prompt order
        image_id = coco.add_image(session.image_name, session.image_size[1], session.image_size[0])
        coco.add_detections(image_id, detections)
        files = [coco.save(root / "coco.json")]
        (root / "result.json").write_text(json.dumps(result_json(session)), encoding="utf-8")
        files.append(root / "result.json")
        names = detections.data.get("class_name", [])
        for i, name in enumerate(names):
            mask_path = root / "masks" / f"{i:03d}_{label_slug(name)}.png"
            files.append(save_mask_png(detections.mask[i], mask_path))
        Image.fromarray(overlay).save(root / "overlay.png")
        files.append(root / "overlay.png")
        with zipfile.ZipFile(zip_path, "w") as bundle:
            for path in files:  # PNGs are already compressed: store them
                method = zipfile.ZIP_STORED if path.suffix == ".png" else zipfile.ZIP_DEFLATED
                bundle.write(path, path.relative_to(root).as_posix(), compress_type=method)
    return zip_path
