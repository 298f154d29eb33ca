"""Reduced precision is opt-in: bfloat16/float16 weights, float32 outputs, masks close to float32."""

from __future__ import annotations

import pytest
import torch

from sam_core import SamPredictor, build_sam

BOXES_XYXY = torch.tensor([[10.0, 10.0, 60.0, 70.0], [0.0, 5.0, 100.0, 50.0], [50.0, 30.0, 119.0, 89.0]])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_matches_float32_masks(tiny, image, dtype) -> None:
    low = build_sam(tiny.config, tiny.folder, device="cpu", dtype=dtype)
    assert low.dtype == dtype and low.image_encoder.blocks[0].attn.qkv.weight.dtype == dtype
    # constants that need the precision stay float32
    assert low.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    assert low.pixel_mean.dtype == torch.float32
    ref_pred, low_pred = SamPredictor(tiny.sam), SamPredictor(low)
    ref_pred.set_image(image)
    low_pred.set_image(image)
    assert low_pred.features.dtype == dtype and low_pred.embedding.nbytes() == 32 * 8 * 8 * 2
    boxes = ref_pred.transform.apply_boxes_torch(BOXES_XYXY, (90, 120))
    ref_masks, ref_iou, _ = ref_pred.predict_torch(None, None, boxes)
    masks, iou, low_res = low_pred.predict_torch(None, None, boxes)
    assert low_res.dtype == torch.float32 and iou.dtype == torch.float32 and masks.dtype == torch.bool
    assert (masks == ref_masks).float().mean() >= 0.98
    assert (iou - ref_iou).abs().max() < 0.1 * ref_iou.abs().max() + 0.05
