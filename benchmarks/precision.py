"""``python -m benchmarks.precision``: does each model keep bf16 under ``dtype: auto``? The figures behind
the rule in ``grounded.models`` (README, "Precision").

On the real-size architectures with random weights (the only weights here), the same inputs run in
float32 and in bfloat16 (native on CPUs with AVX512_BF16/AMX; elsewhere oneDNN emulates it, which
gives the same numbers, slowly):

- detector: per-query box deviation in pixels (query selection pinned to float32's, so the same
  queries are compared) and logit deviation, at 800 x 1333;
- SAM: mask IoU and IoU-score deviation on the same boxes, at 1024;
- pipeline: greedy box-IoU matching of the float32 and bf16 pipelines' detections, then the mean
  mask IoU of the matched pairs and the share of detections that found a match.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cases_dino import CLASSES, _topk_hook, dino_image
from benchmarks.measure import machine_info
from benchmarks.weights import DINO_DIR, SAM_DIR, prepare_weights

__all__ = ["RULE", "main", "measure_precision", "verdict"]

# A model keeps bf16 under dtype "auto" when its bf16 outputs stay this close to float32's
# (grounded.models.AUTO_BF16 records the verdict of the last run on a bf16-native CPU).
RULE = {
    "detector": {"box_px_p95_max": 2.0, "logit_mean_abs_max": 0.05},  # at 800 x 1333
    "sam": {"mask_iou_mean_min": 0.98},  # same boxes, full-size masks
}


def _detector_deviation(root: Path, image: np.ndarray) -> dict[str, float]:
    from grounded.detectors.grounding_dino import GroundingDinoDetector

    fp32 = GroundingDinoDetector.from_pretrained(str(root / DINO_DIR), device="cpu")
    bf16 = GroundingDinoDetector.from_pretrained(str(root / DINO_DIR), device="cpu", dtype=torch.bfloat16)
    pixel_values, pixel_mask = fp32.preprocessor(image, device=fp32.device, dtype=fp32.dtype)
    (caption,) = fp32.captions(CLASSES)  # one pass: the classes fit the text limit
    inputs = {"pixel_values": pixel_values, "pixel_mask": pixel_mask, "input_ids": caption.input_ids,
              "attention_mask": caption.attention_mask, "token_type_ids": caption.token_type_ids}
    record: list[torch.Tensor] = []
    with torch.inference_mode():
        with _topk_hook(record=record):
            ref = fp32.model(**inputs)
        pinned = next(ix for ix in record if ix.shape[-1] == ref.pred_boxes.shape[1])
        with _topk_hook(pinned=pinned):
            low = bf16.model(**inputs)
    height, width = image.shape[:2]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    px = (low.pred_boxes[0].float() - ref.pred_boxes[0].float()).abs() * scale  # Q x 4 cxcywh, pixels
    finite = torch.isfinite(ref.logits[0])
    logit = (low.logits[0].float() - ref.logits[0].float())[finite].abs()
    per_query = px.max(dim=1).values  # Q
    return {
        "box_px_median": float(per_query.median()),
        "box_px_p95": float(per_query.quantile(0.95)),
        "box_px_max": float(per_query.max()),
        "logit_mean_abs": float(logit.mean()),
        "logit_max_abs": float(logit.max()),
        "logit_scale": float(ref.logits[0][finite].abs().max()),
    }


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a, b: N x H x W bool -> N IoUs (pairwise, same index)."""
    inter = np.logical_and(a, b).reshape(len(a), -1).sum(1)
    union = np.logical_or(a, b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _pipelines(root: Path) -> tuple[Any, Any]:
    from grounded.config import DetectorSpec, PipelineConfig, SamSpec
    from grounded.pipeline import GroundedSAM

    config = PipelineConfig(name="precision", detector=DetectorSpec(str(root / DINO_DIR)),
                            sam=SamSpec("vit_b", str(root / SAM_DIR)), device="cpu", dtype="float32")
    fp32 = GroundedSAM.from_config(config)
    bf16 = GroundedSAM.from_config(dataclasses.replace(config, dtype="bfloat16"))
    return fp32, bf16


def _sam_and_pipeline_deviation(root: Path, image: np.ndarray) -> dict[str, dict[str, float]]:
    import supervision as sv

    fp32, bf16 = _pipelines(root)
    prompt = ". ".join(CLASSES)
    ref = fp32.predict(image, prompt, box_threshold=0.0, text_threshold=0.0, max_detections=50)
    # SAM alone: the same boxes through both SAMs
    ref_masks, ref_scores = fp32.segment_boxes(image, ref.xyxy)
    low_masks, low_scores = bf16.segment_boxes(image, ref.xyxy)
    sam = {
        "boxes": float(len(ref)),
        "mask_iou_mean": float(_mask_iou(ref_masks, low_masks).mean()),
        "mask_iou_min": float(_mask_iou(ref_masks, low_masks).min()),
        "iou_score_max_abs": float(np.abs(ref_scores - low_scores).max()),
    }
    # the whole pipeline in bf16 vs float32: match detections by box IoU, compare matched masks
    low = bf16.predict(image, prompt, box_threshold=0.0, text_threshold=0.0, max_detections=50)
    box_iou = sv.box_iou_batch(ref.xyxy, low.xyxy)  # N x M
    pairs, used = [], set()
    for i in np.argsort(-ref.confidence):
        order = [j for j in np.argsort(-box_iou[i]) if j not in used and box_iou[i, j] >= 0.5]
        if order and low.class_id[order[0]] == ref.class_id[i]:
            used.add(order[0])
            pairs.append((i, order[0]))
    matched_iou = [_mask_iou(ref.mask[[i]], low.mask[[j]])[0] for i, j in pairs]
    pipeline = {
        "detections_fp32": float(len(ref)),
        "detections_bf16": float(len(low)),
        "matched_share": len(pairs) / max(len(ref), 1),
        "matched_mask_iou_mean": float(np.mean(matched_iou)) if matched_iou else float("nan"),
    }
    return {"sam": sam, "pipeline": pipeline}


def verdict(result: dict[str, Any]) -> dict[str, bool]:
    """Which models keep bf16 under ``auto``, by :data:`RULE`."""
    detector, sam = result["detector"], result["sam"]
    return {
        "detector": detector["box_px_p95"] <= RULE["detector"]["box_px_p95_max"]
        and detector["logit_mean_abs"] <= RULE["detector"]["logit_mean_abs_max"],
        "sam": sam["mask_iou_mean"] >= RULE["sam"]["mask_iou_mean_min"],
    }


def measure_precision(workdir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="grounded-precision-") as tmp:
        root = Path(workdir or tmp)
        prepare_weights(root, size="full")
        image = dino_image("full")
        result = {"machine": machine_info(), "detector": _detector_deviation(root, image),
                  **_sam_and_pipeline_deviation(root, image)}
    return {**result, "rule": RULE, "keeps_bf16_under_auto": verdict(result)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision.json"))
    args = parser.parse_args(argv)
    result = measure_precision()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
