"""transformers' own SAM 3 pipeline (``Sam3Processor`` + ``Sam3Model`` +
``post_process_instance_segmentation``), the reference the SAM 3 detector is compared with (by the
tests and by the ``sam3`` benchmark case).

This project installs no torchvision, and transformers' ``image_processing_sam3`` imports
``torchvision.ops.boxes.batched_nms`` at module level (only its mask-generation code calls it). The
module is imported here with a stand-in ``torchvision`` whose ``batched_nms`` raises if ever called,
so ``post_process_instance_segmentation`` (which never calls it) runs as transformers wrote it. The
processor's text/box handling runs unchanged too; only its image resizing is not used (it needs
torchvision): both sides get the same ``pixel_values``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


def _post_processor() -> Any:
    """transformers' ``Sam3ImageProcessor`` class, imported with a stand-in torchvision if needed."""
    name = "transformers.models.sam3.image_processing_sam3"
    if name in sys.modules:
        return sys.modules[name].Sam3ImageProcessor
    if importlib.util.find_spec("torchvision") is None:
        def batched_nms(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the stand-in torchvision's batched_nms was called")

        fake = types.ModuleType("torchvision")
        fake.ops = types.ModuleType("torchvision.ops")
        fake.ops.boxes = types.ModuleType("torchvision.ops.boxes")
        fake.ops.boxes.batched_nms = batched_nms
        stand_ins = {"torchvision": fake, "torchvision.ops": fake.ops,
                     "torchvision.ops.boxes": fake.ops.boxes}
        sys.modules.update(stand_ins)
        try:
            module = importlib.import_module(name)
        finally:
            for key in stand_ins:
                sys.modules.pop(key, None)
        return module.Sam3ImageProcessor
    return importlib.import_module(name).Sam3ImageProcessor


def reference_processor(tokenizer: Any) -> Any:
    """A ``Sam3Processor`` with ``tokenizer`` whose image processor only post-processes."""
    from transformers import Sam3Processor

    image_processor = _post_processor().__new__(_post_processor())  # post-processing needs no state
    processor = Sam3Processor.__new__(Sam3Processor)
    processor.tokenizer = tokenizer
    processor.image_processor = image_processor
    processor.point_pad_value = -10
    return processor


def reference_instances(
    model: Any, tokenizer: Any, pixel_values: Any, image_size: tuple[int, int], phrase: str, *,
    threshold: float, boxes: list[list[float]] | None = None, labels: list[int] | None = None,
) -> dict[str, Any]:
    """transformers' result for one phrase: ``{"scores", "boxes", "masks"}`` from its post-processing."""
    import torch

    processor = reference_processor(tokenizer)
    kwargs: dict[str, Any] = {}
    if boxes is not None:
        kwargs = {"input_boxes": [boxes], "input_boxes_labels": [labels]}
    inputs = processor(text=phrase, original_sizes=[list(image_size)], return_tensors="pt", **kwargs)
    with torch.inference_mode():
        outputs = model(
            pixel_values=pixel_values, input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            input_boxes=inputs.get("input_boxes"), input_boxes_labels=inputs.get("input_boxes_labels"),
        )
    return processor.post_process_instance_segmentation(
        outputs, threshold=threshold, mask_threshold=0.5, target_sizes=[image_size]
    )[0]
