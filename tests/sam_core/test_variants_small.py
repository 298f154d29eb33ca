"""MobileSAM / SAM-HQ code paths at small sizes: a small TinyViT, reduced precision, batched forward."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sam_core import SAM_CONFIGS, SamPredictor, TinyViTConfig, build_sam

BOXES_XYXY = torch.tensor([[10.0, 10.0, 60.0, 70.0], [0.0, 5.0, 100.0, 50.0], [50.0, 30.0, 119.0, 89.0]])
# 128 px: /4 stem = 32 x 32, merges /2 /2 /1 -> 8 x 8 tokens (SAM's grid); window 3 pads 8 to 9
SMALL_TINY_VIT = TinyViTConfig(
    embed_dims=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_sizes=(4, 4, 3, 4)
)
SMALL = {
    "tiny-vit": replace(SAM_CONFIGS["tiny"], tiny_vit=SMALL_TINY_VIT),
    "tiny-vit-hq": replace(SAM_CONFIGS["tiny"], tiny_vit=SMALL_TINY_VIT, hq=True),
    "vit-hq": replace(SAM_CONFIGS["tiny"], hq=True),
}


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_matches_float32(name: str, dtype: torch.dtype, image, tmp_path) -> None:
    config = SMALL[name]
    ref = build_sam(config, device="cpu", seed=0)
    path = tmp_path / "weights.pth"
    torch.save(ref.state_dict(), path)
    low = build_sam(config, path, device="cpu", dtype=dtype)
    assert low.dtype == dtype and low.is_hq == config.hq
    ref_pred, low_pred = SamPredictor(ref), SamPredictor(low)
    ref_pred.set_image(image)
    low_pred.set_image(image)
    early = low_pred.embedding.early_features
    assert (early is not None) == config.hq and (early is None or early.dtype == dtype)
    boxes = ref_pred.transform.apply_boxes_torch(BOXES_XYXY, (90, 120))
    ref_masks, ref_iou, ref_low = ref_pred.predict_torch(None, None, boxes)
    masks, iou, low_res = low_pred.predict_torch(None, None, boxes)
    assert low_res.dtype == iou.dtype == torch.float32 and masks.shape == ref_masks.shape
    assert masks.shape[1] == (1 if config.hq else 3)
    assert (low_res - ref_low).abs().max() < 0.1 * ref_low.abs().max()
    assert (iou - ref_iou).abs().max() < 0.1 * ref_iou.abs().max() + 0.05


@pytest.mark.parametrize("name", list(SMALL))
def test_batched_forward_matches_predictor(name: str, image) -> None:
    """Meta's ``Sam.forward`` over two images equals the predictor, one decoder call per image."""
    sam = build_sam(SMALL[name], device="cpu", seed=1)
    pred = SamPredictor(sam)
    pred.set_image(image)
    boxes = pred.transform.apply_boxes_torch(BOXES_XYXY, (90, 120))
    _, iou, low_res = pred.predict_torch(None, None, boxes, multimask_output=False)
    x = torch.as_tensor(pred.transform.apply_image(image)).permute(2, 0, 1)  # 3 x h x w
    record = {"image": x, "original_size": (90, 120), "boxes": boxes}
    outs = sam([record, record], multimask_output=False)
    for out in outs:
        assert torch.allclose(out["low_res_logits"], low_res, atol=1e-5)
        assert torch.allclose(out["iou_predictions"], iou, atol=1e-6)
    if not sam.is_hq:
        with pytest.raises(ValueError, match="needs a SAM-HQ model"):
            sam([record], multimask_output=False, hq_token_only=True)


def test_tiny_vit_config_is_checked() -> None:
    with pytest.raises(ValueError, match="TinyViT downsamples by 32"):
        replace(SAM_CONFIGS["tiny"], tiny_vit=replace(SMALL_TINY_VIT, merge_strides=(2, 2, 2)))
    with pytest.raises(ValueError, match="invalid TinyViTConfig"):
        TinyViTConfig(embed_dims=(8, 15, 16, 32))
