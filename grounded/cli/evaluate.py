"""Zero-shot evaluation on a COCO-format data set: box AP, mask AP and box-prompted mask mIoU.

Two protocols:

* **Text-prompted AP** (Grounding DINO + SAM end to end): every image is prompted with the data
  set's category names; predicted class names map back to category ids *by name*; pycocotools'
  ``COCOeval`` scores boxes (``bbox``) and masks (``segm``).
* **Box-prompted mIoU** (SAM alone, as in the SAM paper): each ground-truth box (non-crowd, with a
  non-empty mask) prompts SAM; the IoU of the predicted mask with the ground-truth mask is averaged
  over all instances.

The metric code takes plain inputs (a COCO dict, COCO result lists, mask arrays), so it is tested with
injected predictions; :func:`run_eval` only produces those inputs with a pipeline.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from grounded.detectors.prompt import parse_prompt
from grounded.io.export import mask_to_rle
from grounded.io.images import load_image

__all__ = [
    "METRIC_NAMES",
    "EvalReport",
    "box_prompted_ious",
    "category_classes",
    "coco_metrics",
    "detections_to_results",
    "evaluate",
    "load_coco",
    "run_eval",
]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""The 12 numbers of ``COCOeval.summarize()``, in its order; ``None`` where COCO reports -1."""

_TABLE_METRICS = ("AP", "AP50", "AP75", "AR100")


@dataclass
class EvalReport:
    """Everything ``grounded-sam eval`` prints and writes (``to_dict`` is the JSON report)."""

    bbox: dict[str, float | None]
    segm: dict[str, float | None]
    miou: float | None  # box-prompted mean IoU over instances; None without instances
    miou_instances: int
    images: int  # images evaluated
    instances: int  # non-crowd ground-truth instances on those images
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file_name, reason)
    extra: dict[str, Any] = field(default_factory=dict)  # config, paths, timing

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "images": self.images,
            "instances": self.instances,
            "classes": self.classes,
            "bbox": self.bbox,
            "segm": self.segm,
            "box_prompted": {"miou": self.miou, "instances": self.miou_instances},
            "skipped": [{"file_name": name, "error": reason} for name, reason in self.skipped],
        }

    def format_table(self) -> str:
        def cell(value: float | None) -> str:
            return "   n/a" if value is None else f"{value:6.3f}"

        lines = [f"{'metric':<8} {'bbox':>6} {'segm':>6}"]
        lines += [f"{name:<8} {cell(self.bbox[name])} {cell(self.segm[name])}" for name in _TABLE_METRICS]
        lines.append(f"box-prompted mIoU: {cell(self.miou).strip()} over {self.miou_instances} instances")
        lines.append(f"{self.images} images, {self.instances} instances, {len(self.classes)} classes"
                     + (f", {len(self.skipped)} images skipped" if self.skipped else ""))
        return "\n".join(lines)


# ------------------------------------------------------------------------------ ground truth
def load_coco(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a COCO instances JSON and check the keys evaluation needs (clear error otherwise)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read COCO annotations {os.fspath(path)!r}: {exc}") from None
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise ValueError(f"{os.fspath(path)!r} is not a COCO instances file: no list {missing}")
    if not data["categories"]:
        raise ValueError(f"{os.fspath(path)!r} has no categories to prompt with")
    return data


def _coco(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def category_classes(categories: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Prompt class name -> category id (``"traffic_light"`` -> ``"traffic light"``), in id order.

    Raises:
        ValueError: two categories normalise to the same class name.
    """
    classes: dict[str, int] = {}
    for category in sorted(categories, key=lambda c: c["id"]):
        name = re.sub(r"[_.,]+", " ", str(category["name"]))
        (text,) = parse_prompt(name) if name.strip() else (str(category["id"]),)
        if text in classes:
            raise ValueError(f"categories {classes[text]} and {category['id']} both read as the class "
                             f"{text!r}; rename one so each category has its own prompt phrase")
        classes[text] = int(category["id"])
    return classes


# ------------------------------------------------------------------------------ metrics
def detections_to_results(detections: sv.Detections, *, image_id: int,
                          category_of: dict[str, int]) -> list[dict[str, Any]]:
    """Predictions of one image -> COCO results (``bbox`` xywh, ``segmentation`` RLE, ``score``).

    Class names (``data["class_name"]``) map to category ids through ``category_of``; detections of
    names not in it are dropped.
    """
    results = []
    names = detections.data.get("class_name", [])
    for i, name in enumerate(names):
        if str(name) not in category_of:
            continue
        x0, y0, x1, y1 = (float(v) for v in detections.xyxy[i])
        result = {"image_id": int(image_id), "category_id": category_of[str(name)],
                  "bbox": [x0, y0, x1 - x0, y1 - y0],
                  "score": float(detections.confidence[i]) if detections.confidence is not None else 1.0}
        if detections.mask is not None:
            result["segmentation"] = mask_to_rle(detections.mask[i])
        results.append(result)
    return results


def coco_metrics(gt: dict[str, Any], results: Sequence[dict[str, Any]], *, iou_type: str,
                 image_ids: Sequence[int] | None = None,
                 category_ids: Sequence[int] | None = None) -> dict[str, float | None]:
    """COCOeval's 12 summary numbers for ``iou_type`` ``"bbox"`` or ``"segm"`` (see METRIC_NAMES).

    ``results`` are COCO result dicts; for ``segm`` each needs a ``segmentation``. No results at all
    gives 0.0 wherever the ground truth has instances (pycocotools cannot load an empty list).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    coco_gt = _coco(gt)
    # bbox results carry no mask and segm results no box (as detectron2 does), so each metric reads
    # its own geometry and segm areas come from the masks.
    key = "segmentation" if iou_type == "segm" else "bbox"
    drop = "bbox" if iou_type == "segm" else "segmentation"
    clean = [{k: v for k, v in r.items() if k != drop} for r in results if key in r]
    if not clean:
        clean = [_dummy_result(gt, iou_type)] if gt["images"] and gt["categories"] else []
    if not clean:
        return dict.fromkeys(METRIC_NAMES)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(clean)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        if category_ids is not None:
            evaluator.params.catIds = sorted(int(c) for c in category_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (None if value < 0 else float(value)) for name, value in zip(METRIC_NAMES, evaluator.stats,
                                                                            strict=True)}


def _dummy_result(gt: dict[str, Any], iou_type: str) -> dict[str, Any]:
    """A zero-score, zero-size result: loadRes needs one entry; it matches nothing, so AP/AR are 0."""
    image = gt["images"][0]
    result = {"image_id": image["id"], "category_id": gt["categories"][0]["id"], "score": 0.0}
    if iou_type == "bbox":
        result["bbox"] = [0.0, 0.0, 0.0, 0.0]
    else:
        result["segmentation"] = mask_to_rle(np.zeros((image["height"], image["width"]), dtype=bool))
    return result


def box_prompted_ious(gt_masks: np.ndarray, pred_masks: np.ndarray) -> np.ndarray:
    """Per-instance IoU of N x H x W bool masks (ground truth vs prediction) -> N float64.

    IoU = |G and P| / |G or P|; two empty masks count as 1.0.
    """
    if gt_masks.shape != pred_masks.shape or gt_masks.ndim != 3:
        raise ValueError(f"need two N x H x W mask stacks of one shape, got {gt_masks.shape} and "
                         f"{pred_masks.shape}")
    gt, pred = gt_masks.astype(bool), pred_masks.astype(bool)
    inter = (gt & pred).sum(axis=(1, 2)).astype(np.float64)  # N
    union = (gt | pred).sum(axis=(1, 2)).astype(np.float64)  # N
    return np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)


def evaluate(gt: dict[str, Any], results: Sequence[dict[str, Any]], *,
             box_prompted: dict[int, np.ndarray] | None = None, image_ids: Sequence[int] | None = None,
             category_ids: Sequence[int] | None = None) -> EvalReport:
    """Score predictions against a COCO ground truth (no model involved).

    Args:
        gt: COCO instances dict (``images``, ``annotations``, ``categories``).
        results: COCO results for the text-prompted protocol (see :func:`detections_to_results`).
        box_prompted: image id -> K x H x W bool masks SAM predicted for that image's prompt
            instances (:func:`_prompt_instances` order: non-crowd annotations with a non-empty mask,
            by annotation id). Images missing here are left out of the mIoU.
        image_ids: images to score (default: all in ``gt``).
        category_ids: categories to score (default: all).
    """
    coco_gt = _coco(gt)
    ids = sorted(coco_gt.getImgIds() if image_ids is None else image_ids)
    ious: list[np.ndarray] = []
    for image_id in ids if box_prompted is not None else []:
        if image_id in box_prompted:
            _, gt_masks = _prompt_instances(coco_gt, image_id, category_ids)
            ious.append(box_prompted_ious(gt_masks, box_prompted[image_id]))
    all_ious = np.concatenate(ious) if ious else np.zeros(0)
    wanted = None if category_ids is None else set(category_ids)
    instances = sum(1 for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=ids, iscrowd=False))
                    if wanted is None or a["category_id"] in wanted)
    return EvalReport(
        bbox=coco_metrics(gt, results, iou_type="bbox", image_ids=ids, category_ids=category_ids),
        segm=coco_metrics(gt, results, iou_type="segm", image_ids=ids, category_ids=category_ids),
        miou=float(all_ious.mean()) if all_ious.size else None,
        miou_instances=int(all_ious.size),
        images=len(ids),
        instances=instances,
    )


def _prompt_instances(coco_gt: COCO, image_id: int,
                      category_ids: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """GT boxes (K x 4 xyxy, absolute pixels) and masks (K x H x W bool) that prompt SAM."""
    image = coco_gt.imgs[image_id]
    anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id], catIds=category_ids or [], iscrowd=False))
    masks = [coco_gt.annToMask(a).astype(bool) for a in sorted(anns, key=lambda a: a["id"])]
    keep = [(a, m) for a, m in zip(sorted(anns, key=lambda a: a["id"]), masks, strict=True) if m.any()]
    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a, _ in keep], dtype=np.float32).reshape(-1, 4)  # K x 4 xyxy
    stack = (np.stack([m for _, m in keep]) if keep
             else np.zeros((0, image["height"], image["width"]), dtype=bool))  # K x H x W
    return boxes, stack


# ------------------------------------------------------------------------------ model driver
def run_eval(pipe: Any, *, images_dir: str | os.PathLike[str], annotations: str | os.PathLike[str],
             prompt: str | None = None, max_images: int | None = None, box_prompted: bool = True,
             predict_kwargs: dict[str, Any] | None = None,
             on_image: Callable[[], None] | None = None) -> EvalReport:
    """Run ``pipe`` over a COCO data set and score it.

    Args:
        pipe: a ``GroundedSAM``.
        images_dir: folder the COCO ``file_name`` entries are relative to.
        annotations: COCO instances JSON.
        prompt: restrict to these classes (each must name a category); default: all categories.
        max_images: evaluate only the first N images (by image id), for quick checks.
        box_prompted: also run the box-prompted mIoU protocol (skipped for ``sam: none`` pipelines:
            with no SAM there is nothing to prompt with boxes; ``extra`` says so).
        predict_kwargs: threshold overrides passed to ``pipe.predict``.
        on_image: called after each image (progress bars).
    """
    start = time.perf_counter()
    no_sam = getattr(pipe, "sam", True) is None
    box_prompted = box_prompted and not no_sam
    gt = load_coco(annotations)
    category_of = category_classes(gt["categories"])
    if prompt is not None:
        wanted = parse_prompt(prompt)
        unknown = [name for name in wanted if name not in category_of]
        if unknown:
            raise ValueError(f"prompt classes {unknown} are not categories of {os.fspath(annotations)!r}; "
                             f"known: {sorted(category_of)[:20]}")
        category_of = {name: category_of[name] for name in wanted}
    classes = list(category_of)
    category_ids = sorted(category_of.values()) if prompt is not None else None
    coco_gt = _coco(gt)
    image_ids = sorted(coco_gt.getImgIds())[: max_images if max_images is not None else None]
    results: list[dict[str, Any]] = []
    masks_by_image: dict[int, np.ndarray] = {}
    evaluated, skipped = [], []
    for image_id in image_ids:
        file_name = coco_gt.imgs[image_id]["file_name"]
        try:
            rgb = load_image(Path(images_dir) / file_name, max_pixels=pipe.config.max_pixels)
            detections = pipe.predict(rgb, classes, **(predict_kwargs or {}))
            if box_prompted:
                boxes, _ = _prompt_instances(coco_gt, image_id, category_ids)
                masks_by_image[image_id], _ = pipe.segment_boxes(rgb, boxes)
        except (ValueError, RuntimeError, OSError) as exc:
            skipped.append((file_name, str(exc) or type(exc).__name__))
        else:
            evaluated.append(image_id)
            results.extend(detections_to_results(detections, image_id=image_id, category_of=category_of))
        if on_image is not None:
            on_image()
    if not evaluated:
        raise RuntimeError(f"no image could be evaluated ({len(skipped)} skipped); first error: "
                           f"{skipped[0][0]}: {skipped[0][1]}" if skipped else "the data set has no images")
    report = evaluate(gt, results, box_prompted=masks_by_image if box_prompted else None,
                      image_ids=evaluated, category_ids=category_ids)
    report.classes, report.skipped = classes, skipped
    report.extra = {"annotations": os.fspath(annotations), "images_dir": os.fspath(images_dir),
                    "config": pipe.config.name, "untrained": bool(pipe.is_untrained),
                    "models": pipe.describe(),
                    "seconds": round(time.perf_counter() - start, 3)}
    if no_sam:
        report.extra["box_prompted_skipped"] = "sam: none (the detector's own masks; no SAM to prompt)"
    return report
