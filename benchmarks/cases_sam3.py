"""SAM 3 case: one image at SAM 3's native 1008 x 1008 input, text -> instance masks, float32 on CPU.

Run it alone (heavy: the full-size model has ~0.85 B parameters): ``python -m benchmarks.run --cases sam3``.
Both variants build the same full-size random-weight ``Sam3Model`` from one seed (no weights on disk):

- ``hf``: transformers' own pipeline: ``Sam3Processor`` tokenisation, ``Sam3Model.forward``,
  ``post_process_instance_segmentation`` (threshold 0.3, masks resized to the image). The processor's
  image resizing needs torchvision, which this project does not install, so both variants resize
  with ``Sam3Detector.pixel_values`` (the same bilinear/antialias resize and 0.5/0.5 normalisation);
- ``ours``: ``GroundedSAM`` with ``detector: sam3`` and ``sam: none`` on a cold cache (vision encoder,
  decoder, thresholds, NMS, upsampling of the kept masks), and the same image with a new prompt
  (the vision features come from the cache).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from benchmarks.context import Context
from benchmarks.measure import measure

__all__ = ["SAM3_VARIANTS", "compare_sam3"]

PROMPT = "cat"
THRESHOLD = 0.3  # transformers' post-processing default


def _image(ctx: Context) -> np.ndarray:
    """A fixed 1008 x 1008 RGB image (SAM 3's native size: no resize on either side)."""
    side = 1008 if ctx.size == "full" else 112
    return np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _detector(ctx: Context) -> Any:
    from transformers import Sam3Config, Sam3Model

    from grounded.detectors.sam3 import Sam3Detector
    from grounded.detectors.tiny_sam3 import tiny_sam3_config, tiny_sam3_tokenizer

    tokenizer = tiny_sam3_tokenizer()  # a byte-level CLIP tokenizer: the same ids on both sides
    config = Sam3Config() if ctx.size == "full" else tiny_sam3_config()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Sam3Model(config).eval()
    return Sam3Detector(model, tokenizer, model_id="random-full-size", untrained=True)


def _hf_pipeline(ctx: Context, name: str) -> dict[str, Any]:
    from benchmarks.sam3_reference import reference_processor

    detector, image = _detector(ctx), _image(ctx)
    processor = reference_processor(detector.tokenizer)
    size = image.shape[:2]

    def run() -> dict[str, torch.Tensor]:
        inputs = processor(text=PROMPT, original_sizes=[list(size)], return_tensors="pt")
        outputs = detector.model(pixel_values=detector.pixel_values(image), input_ids=inputs["input_ids"],
                                 attention_mask=inputs["attention_mask"])
        return processor.post_process_instance_segmentation(
            outputs, threshold=THRESHOLD, mask_threshold=0.5, target_sizes=[size])[0]

    with torch.inference_mode():
        timing = measure(run, warmup=ctx.warmup, repeats=ctx.repeats)
        result = run()
    ctx.save(f"sam3-{name}", {"scores": result["scores"], "boxes": result["boxes"],
                              "masks": result["masks"].bool()})
    return {"timing": timing.as_dict(), "instances": len(result["scores"])}


def _ours(ctx: Context, name: str) -> dict[str, Any]:
    from grounded.config import load_config
    from grounded.pipeline import GroundedSAM

    config = dataclasses.replace(load_config("sam3"), name="benchmark", nms_iou=None, max_detections=1000,
                                 box_threshold=THRESHOLD, text_threshold=0.0, dtype="float32",
                                 tune_allocator=False)
    pipe = GroundedSAM(_detector(ctx), None, config=config)
    image = _image(ctx)

    def cold() -> Any:
        pipe.clear_cache()
        return pipe.predict(image, PROMPT)

    prompts = iter(f"thing {i}" for i in range(10_000))

    def new_prompt() -> Any:
        return pipe.predict(image, next(prompts))  # cached vision features, new text

    timing = measure(cold, warmup=ctx.warmup, repeats=ctx.repeats)
    result = cold()
    start = time.perf_counter()
    new = measure(new_prompt, warmup=0, repeats=ctx.repeats)
    order = np.argsort(-result.confidence, kind="stable")
    ctx.save(f"sam3-{name}", {"scores": torch.from_numpy(result.confidence[order]),
                              "boxes": torch.from_numpy(result.xyxy[order]),
                              "masks": torch.from_numpy(result.mask[order])})
    return {"timing": timing.as_dict(), "new_prompt": new.as_dict(), "instances": len(result),
            "encoder_calls": pipe.stats.detector_encoder_calls,
            "new_prompt_total_s": round(time.perf_counter() - start, 2)}


def compare_sam3(ctx: Context) -> dict[str, Any]:
    """Ours vs transformers' pipeline on the same image: instance count, max score/box gap, mask IoU."""
    theirs, ours = ctx.load("sam3-hf"), ctx.load("sam3-ours")
    if theirs is None or ours is None:
        return {}
    order = torch.argsort(-theirs["scores"], stable=True)
    size = _image(ctx).shape[0]
    boxes = theirs["boxes"][order].clamp(0, size)
    same = len(order) == len(ours["scores"])
    result: dict[str, Any] = {"instances_hf": len(order), "instances_ours": len(ours["scores"]),
                              "same_count": same}
    if same and len(order):
        masks = theirs["masks"][order]
        union = (masks | ours["masks"]).sum().item()
        result.update(
            max_abs_score=float((theirs["scores"][order] - ours["scores"]).abs().max()),
            max_abs_box=float((boxes - ours["boxes"]).abs().max()),
            mask_iou=float((masks & ours["masks"]).sum().item() / union) if union else 1.0,
        )
    return {"ours": result}


SAM3_VARIANTS = {"hf": _hf_pipeline, "ours": _ours}
