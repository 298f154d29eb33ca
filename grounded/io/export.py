"""Serialise ``sv.Detections``: COCO RLE masks, the shared JSON schema, COCO datasets, mask PNGs.

The JSON schema is shared by the Python API, the HTTP API and the CLI (one object per image, one
line per image in ``.jsonl``)::

    {"image": {"width": W, "height": H}, "classes": [str, ...],
     "detections": [{"label": str, "class_id": int, "score": float, "mask_score": float | None,
                     "box_xyxy": [x0, y0, x1, y1], "area": int,
                     "mask": {"size": [H, W], "counts": str} | None}]}

Boxes are xyxy in absolute pixels of the original (EXIF-transposed) image, rounded to 2 decimals.
Scores are written with the shortest decimal that reads back to the same float32. ``area`` is the
mask's pixel count, or the rounded box area when there is no mask. Masks are COCO compressed RLE
(column-major, as pycocotools writes it) with ``counts`` decoded to an ASCII ``str``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image
from pycocotools import mask as mask_utils

from grounded.io.files import atomic_write, atomic_write_bytes, encode_png
from grounded.masks import CompactMask

__all__ = [
    "CocoBuilder",
    "detections_from_dict",
    "detections_to_dict",
    "encode_mask_png",
    "mask_to_rle",
    "masks_to_rles",
    "read_mask_png",
    "rle_to_mask",
    "save_mask_png",
]

Rle = dict[str, Any]


def mask_to_rle(mask: np.ndarray) -> Rle:
    """H x W bool mask -> ``{"size": [H, W], "counts": str}`` (COCO compressed RLE)."""
    if mask.ndim != 2:
        raise ValueError(f"mask_to_rle expects one H x W mask, got shape {mask.shape}; use masks_to_rles")
    return masks_to_rles(mask[None])[0]  # H x W -> 1 x H x W


def masks_to_rles(masks: np.ndarray) -> list[Rle]:
    """N x H x W bool masks -> N RLEs, encoded by pycocotools in one call."""
    if masks.ndim != 3:
        raise ValueError(f"masks_to_rles expects N x H x W masks, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))  # N x H x W -> H x W x N
    return [
        {"size": [int(size) for size in rle["size"]], "counts": rle["counts"].decode("ascii")}
        for rle in mask_utils.encode(fortran)
    ]


def _rles_and_areas(masks: np.ndarray | CompactMask) -> tuple[list[Rle], list[int]]:
    """RLEs and pixel areas of N x H x W masks; a ``CompactMask`` is encoded one frame at a time."""
    if isinstance(masks, CompactMask):
        return [mask_to_rle(mask) for mask in masks], [int(a) for a in masks.area]
    return masks_to_rles(masks), masks.sum(axis=(1, 2)).tolist()


def rle_to_mask(rle: Rle) -> np.ndarray:
    """COCO RLE (compressed ``counts`` as str or bytes, or uncompressed list counts) -> H x W bool."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"not a COCO RLE (need 'size': [H, W] and 'counts'): {str(rle)[:80]}") from None
    if isinstance(counts, list):
        encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
        encoded = {"size": [height, width], "counts": raw}
    return np.ascontiguousarray(mask_utils.decode(encoded).astype(bool))  # Fortran H x W -> C order


def _f32(value: Any) -> float:
    """Shortest decimal that reads back to the same float32 (0.87, not 0.8700000047683716)."""
    return float(str(np.float32(value)))


def detections_to_dict(
    detections: sv.Detections, *, image_size: tuple[int, int], classes: Sequence[str]
) -> dict[str, Any]:
    """``sv.Detections`` -> the JSON-serialisable schema in the module docstring.

    Args:
        detections: xyxy in absolute pixels; optional ``mask`` (N x H x W bool, or an
            ``sv.CompactMask`` encoded one mask at a time), ``confidence``,
            ``class_id``, ``data["class_name"]`` and ``data["mask_score"]``.
        image_size: (H, W) of the original image.
        classes: the class names of the prompt, in class_id order.
    """
    height, width = (int(v) for v in image_size)
    n = len(detections)
    if detections.mask is not None and detections.mask.shape[1:] != (height, width):
        raise ValueError(f"masks are {detections.mask.shape[1:]} but image_size is {(height, width)}")
    names = detections.data.get("class_name")
    class_ids = detections.class_id
    mask_scores = detections.data.get("mask_score")
    if detections.mask is not None:
        encoded = _rles_and_areas(detections.mask)
        rles: list[Rle | None] = list(encoded[0])
        areas = encoded[1]
    else:
        rles = [None] * n
        xyxy = detections.xyxy.astype(np.float64)
        areas = np.rint((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])).astype(int).tolist()
    rows = []
    for i in range(n):
        class_id = int(class_ids[i]) if class_ids is not None else -1
        if names is not None:
            label = str(names[i])
        else:
            label = classes[class_id] if 0 <= class_id < len(classes) else str(class_id)
        rows.append(
            {
                "label": label,
                "class_id": class_id,
                "score": _f32(detections.confidence[i]) if detections.confidence is not None else None,
                "mask_score": _f32(mask_scores[i]) if mask_scores is not None else None,
                "box_xyxy": [round(float(v), 2) for v in detections.xyxy[i]],
                "area": int(areas[i]),
                "mask": rles[i],
            }
        )
    return {"image": {"width": width, "height": height}, "classes": [str(c) for c in classes],
            "detections": rows}


def detections_from_dict(d: dict[str, Any]) -> sv.Detections:
    """Inverse of :func:`detections_to_dict`: masks are decoded to N x H x W bool.

    ``mask`` is set when every detection has one; ``confidence`` when every score is set;
    ``data["mask_score"]`` (float32, NaN where missing) when any detection has one.
    """
    try:
        height, width = int(d["image"]["height"]), int(d["image"]["width"])
        rows = list(d["detections"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("not a detections dict: need 'image' {'width', 'height'} and 'detections'") from None
    if not rows:
        return sv.Detections(
            xyxy=np.empty((0, 4), np.float32), confidence=np.empty(0, np.float32),
            class_id=np.empty(0, np.int64), data={"class_name": np.empty(0, dtype=str)},
        )
    masks = [row.get("mask") for row in rows]
    if any(m is None for m in masks) and not all(m is None for m in masks):
        raise ValueError("either every detection has a mask or none does")
    mask = None if masks[0] is None else np.stack([rle_to_mask(m) for m in masks])  # N x H x W
    if mask is not None and mask.shape[1:] != (height, width):
        raise ValueError(f"mask size {mask.shape[1:]} does not match the image size {(height, width)}")
    scores = [row.get("score") for row in rows]
    mask_scores = [row.get("mask_score") for row in rows]
    data: dict[str, np.ndarray] = {"class_name": np.array([str(row["label"]) for row in rows])}
    if any(s is not None for s in mask_scores):
        data["mask_score"] = np.array([np.nan if s is None else s for s in mask_scores], np.float32)
    return sv.Detections(
        xyxy=np.array([row["box_xyxy"] for row in rows], np.float32).reshape(-1, 4),  # N x 4
        mask=mask,
        confidence=None if any(s is None for s in scores) else np.array(scores, np.float32),
        class_id=np.array([int(row["class_id"]) for row in rows], np.int64),
        data=data,
    )


def encode_mask_png(mask: np.ndarray) -> bytes:
    """An H x W bool mask as the bytes of a lossless 8-bit grayscale PNG (0 / 255)."""
    if mask.ndim != 2:
        raise ValueError(f"a mask PNG holds one H x W mask, got shape {mask.shape}")
    return encode_png(np.where(mask.astype(bool), 255, 0).astype(np.uint8))


def save_mask_png(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Save an H x W bool mask as a lossless 8-bit grayscale PNG (0 / 255), atomically."""
    return atomic_write_bytes(path, encode_mask_png(mask))


def read_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a mask PNG written by :func:`save_mask_png` (or any gray/1-bit PNG) -> H x W bool (>= 128)."""
    with Image.open(path) as image:
        return np.array(image.convert("L")) >= 128


class CocoBuilder:
    """Accumulate images and detections into a COCO instance-segmentation dataset.

    Categories are keyed by class *name* (ids 1..K in first-seen order; new names append), so the
    per-prompt ``class_id`` of different images cannot collide. Each annotation has a compressed
    RLE ``segmentation`` (counts a str; the box polygon when there is no mask), ``area`` = mask
    pixel count (box area without a mask), ``bbox`` = the detector's box clipped to the image, as
    xywh (COCO's convention for detections), ``iscrowd`` 0, and the extra ``score`` and
    ``mask_score`` fields, so the file doubles as a COCO results list (``COCO.loadRes``).
    """

    def __init__(self, *, description: str = "grounded-sam predictions",
                 models: dict[str, Any] | None = None) -> None:
        """``models``: ``GroundedSAM.describe()``, kept in ``info["models"]`` (device, dtype per model)."""
        self._info: dict[str, Any] = {"description": description}
        if models is not None:
            self._info["models"] = models
        self._categories: dict[str, int] = {}
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []

    def add_categories(self, classes: Iterable[str]) -> dict[str, int]:
        """Register class names (existing ones keep their id); returns the full name -> id map."""
        for name in classes:
            self._categories.setdefault(str(name), len(self._categories) + 1)
        return dict(self._categories)

    def add_image(self, file_name: str, width: int, height: int) -> int:
        """Register an image (width x height pixels); returns its id (1, 2, ...)."""
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got width={width}, height={height}")
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "file_name": str(file_name), "width": int(width),
                             "height": int(height)})
        return image_id

    def add_detections(self, image_id: int, detections: sv.Detections) -> list[int]:
        """Add one annotation per detection of image ``image_id``; returns the annotation ids.

        Labels come from ``data["class_name"]`` and unknown names are appended as categories.
        """
        if not 1 <= image_id <= len(self._images):
            raise ValueError(f"unknown image_id {image_id}; call add_image first")
        if len(detections) == 0:
            return []
        image = self._images[image_id - 1]
        width, height = image["width"], image["height"]
        if "class_name" not in detections.data:
            raise ValueError("detections need data['class_name'] to map to COCO categories")
        names = [str(name) for name in detections.data["class_name"]]
        category_of = self.add_categories(names)
        xyxy = detections.xyxy.astype(np.float64).copy()  # N x 4
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
        xywh = np.round(np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1), 2)  # N x 4
        if detections.mask is not None:
            if detections.mask.shape[1:] != (height, width):
                raise ValueError(f"masks are {detections.mask.shape[1:]} but image {image_id} is "
                                 f"{(height, width)} (H, W)")
            segmentations, areas = _rles_and_areas(detections.mask)
        else:
            segmentations = [[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in xyxy.tolist()]
            areas = np.rint(xywh[:, 2] * xywh[:, 3]).astype(int).tolist()
        confidence = detections.confidence
        mask_scores = detections.data.get("mask_score")
        ids = []
        for i, name in enumerate(names):
            annotation_id = len(self._annotations) + 1
            self._annotations.append({
                "id": annotation_id,
                "image_id": image_id,
                "category_id": category_of[name],
                "segmentation": segmentations[i],
                "area": int(areas[i]),
                "bbox": xywh[i].tolist(),
                "iscrowd": 0,
                "score": _f32(confidence[i]) if confidence is not None else 1.0,
                "mask_score": _f32(mask_scores[i]) if mask_scores is not None else None,
            })
            ids.append(annotation_id)
        return ids

    def to_dict(self) -> dict[str, Any]:
        """The COCO dataset: info, licenses, images, annotations, categories (plain Python types)."""
        return {
            "info": dict(self._info),
            "licenses": [],
            "images": [dict(image) for image in self._images],
            "annotations": [dict(annotation) for annotation in self._annotations],
            "categories": [{"id": cid, "name": name, "supercategory": ""}
                           for name, cid in self._categories.items()],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset as JSON, atomically (temporary file + ``os.replace``)."""
        data = self.to_dict()
        return atomic_write(path, lambda handle: json.dump(data, handle), binary=False)
