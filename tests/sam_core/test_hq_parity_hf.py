"""SAM-HQ: numerical parity with transformers' SamHQModel on identical (random, non-trivial) weights.

sam_core loads SamHQModel.save_pretrained through its HF -> SysCV key map. SysCV's predictor returns
ONE mask per prompt; transformers returns the three multimask outputs sorted by IoU (each plus the HQ
mask), so its first output is SysCV's (best SAM mask + HQ mask) and its first IoU the best IoU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from sam_core import SamPredictor, build_sam

IMAGE_HW = (90, 120)  # the ``image`` fixture's (H, W)
RTOL = 1e-4  # max |ours - ref| / max |ref|
PIXEL_AGREEMENT = 0.999

BOXES_XYXY = torch.tensor([[10.0, 10.0, 60.0, 70.0], [0.0, 5.0, 100.0, 50.0], [50.0, 30.0, 119.0, 89.0]])
POINTS_XY = torch.tensor([[[30.0, 40.0], [80.0, 20.0]]])  # 1 x 2 x 2, original-image pixels
LABELS = torch.tensor([[1, 0]])
PROMPTS = {
    "points": dict(points=True),
    "box": dict(boxes=slice(0, 1)),
    "box+points": dict(points=True, boxes=slice(0, 1)),
    "three-boxes": dict(boxes=slice(0, 3)),
    "three-boxes+points": dict(points=True, boxes=slice(0, 3)),
}


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def _pixels(pred: SamPredictor, image: np.ndarray) -> torch.Tensor:
    transformed = torch.as_tensor(pred.transform.apply_image(image)).permute(2, 0, 1)[None]  # 1 x 3 x h x w
    return pred.model.preprocess(transformed)  # 1 x 3 x S x S


@torch.no_grad()
def _hf_predict(ref, pixels, *, points=None, labels=None, boxes=None, masks=None, multimask, hq_token_only):
    kwargs = {}
    if points is not None:
        kwargs.update(input_points=points[None], input_labels=labels[None])  # 1 x B x N x 2, 1 x B x N
    if boxes is not None:
        kwargs["input_boxes"] = boxes[None]  # 1 x B x 4
    if masks is not None:
        kwargs["input_masks"] = masks  # 1 x 1 x m x m
    out = ref.hf(pixel_values=pixels, multimask_output=multimask, hq_token_only=hq_token_only, **kwargs)
    # SysCV's single output: the first (best-IoU) mask and IoU, B x 1 x m x m and B x 1
    return out.pred_masks[0][:, :1], out.iou_scores[0][:, :1]


def _prompts(pred: SamPredictor, prompt: str):
    spec = PROMPTS[prompt]
    boxes = points = labels = None
    if "boxes" in spec:
        boxes = pred.transform.apply_boxes_torch(BOXES_XYXY[spec["boxes"]], IMAGE_HW)  # B x 4
    if spec.get("points"):
        batch = 1 if boxes is None else len(boxes)
        points = pred.transform.apply_coords_torch(POINTS_XY, IMAGE_HW).expand(batch, -1, -1)  # B x 2 x 2
        labels = LABELS.expand(batch, -1)
    return points, labels, boxes


def test_hq_embedding_and_early_features_match_hf(hq_reference, image: np.ndarray) -> None:
    pred = SamPredictor(hq_reference.sam)
    pred.set_image(image)
    with torch.no_grad():
        hf_features, hf_early = hq_reference.hf.get_image_embeddings(_pixels(pred, image))
    emb = pred.embedding
    assert emb.features.shape == hf_features.shape == (1, 32, 8, 8)
    assert emb.early_features.shape == hf_early[0].shape == (1, 8, 8, 32)
    assert _rel(emb.features, hf_features) <= RTOL and _rel(emb.early_features, hf_early[0]) <= RTOL
    assert emb.nbytes() == 4 * (32 * 8 * 8 + 8 * 8 * 32)  # the early features count


@pytest.mark.parametrize("hq_token_only", [False, True], ids=["sam+hq", "hq-only"])
@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_hq_decoder_matches_hf(
    hq_reference, image, prompt: str, multimask: bool, hq_token_only: bool
) -> None:
    pred = SamPredictor(hq_reference.sam)
    pred.set_image(image)
    points, labels, boxes = _prompts(pred, prompt)
    masks, iou, low_res = pred.predict_torch(
        points, labels, boxes, multimask_output=multimask, hq_token_only=hq_token_only
    )
    hf_low_res, hf_iou = _hf_predict(
        hq_reference,
        _pixels(pred, image),
        points=points,
        labels=labels,
        boxes=boxes,
        multimask=multimask,
        hq_token_only=hq_token_only,
    )
    assert low_res.shape == hf_low_res.shape == (len(masks), 1, 32, 32)
    assert iou.shape == hf_iou.shape == (len(masks), 1) and low_res.dtype == iou.dtype == torch.float32
    assert _rel(low_res, hf_low_res) <= RTOL
    assert _rel(iou, hf_iou) <= RTOL
    processor = SamImageProcessorPil(pad_size={"height": 128, "width": 128})
    hf_masks = processor.post_process_masks([hf_low_res], [IMAGE_HW], [pred.input_size])[0]
    assert masks.shape == hf_masks.shape == (len(masks), 1, *IMAGE_HW) and masks.dtype == torch.bool
    assert 0.02 < masks.float().mean() < 0.98  # not trivially empty/full
    assert (masks == hf_masks).float().mean() >= PIXEL_AGREEMENT


def test_hq_token_only_changes_the_answer(hq_reference, image) -> None:
    pred = SamPredictor(hq_reference.sam)
    pred.set_image(image)
    box = BOXES_XYXY[0].numpy()
    _, iou_sum, both = pred.predict(box=box, multimask_output=False)
    _, iou_hq, hq_only = pred.predict(box=box, multimask_output=False, hq_token_only=True)
    assert both.shape == hq_only.shape == (1, 32, 32)
    assert np.array_equal(iou_sum, iou_hq)  # the IoU is SAM's token's either way
    assert np.abs(both - hq_only).max() > 1e-2


@pytest.mark.parametrize("hq_token_only", [False, True], ids=["sam+hq", "hq-only"])
def test_hq_mask_prompt_matches_hf(hq_reference, image, hq_token_only: bool) -> None:
    pred = SamPredictor(hq_reference.sam)
    pred.set_image(image)
    points = pred.transform.apply_coords_torch(POINTS_XY, IMAGE_HW)
    mask_input = 3 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    _, iou, low_res = pred.predict_torch(points, LABELS, mask_input=mask_input, hq_token_only=hq_token_only)
    _, _, no_mask = pred.predict_torch(points, LABELS, hq_token_only=hq_token_only)
    hf_low_res, hf_iou = _hf_predict(
        hq_reference,
        _pixels(pred, image),
        points=points,
        labels=LABELS,
        masks=mask_input,
        multimask=True,
        hq_token_only=hq_token_only,
    )
    assert _rel(low_res, hf_low_res) <= RTOL and _rel(iou, hf_iou) <= RTOL
    assert _rel(low_res, no_mask) > 1e-2  # the mask prompt changes the answer


def test_sam_forward_matches_predictor(hq_reference, image) -> None:
    """Meta's batched ``Sam.forward`` takes hq_token_only and agrees with the predictor."""
    sam = hq_reference.sam
    pred = SamPredictor(sam)
    pred.set_image(image)
    boxes = pred.transform.apply_boxes_torch(BOXES_XYXY, IMAGE_HW)
    _, iou, low_res = pred.predict_torch(None, None, boxes, hq_token_only=True)
    image_torch = torch.as_tensor(pred.transform.apply_image(image)).permute(2, 0, 1)  # 3 x h x w
    (out,) = sam(
        [{"image": image_torch, "original_size": IMAGE_HW, "boxes": boxes}], True, hq_token_only=True
    )
    assert torch.allclose(out["low_res_logits"], low_res, atol=1e-5) and torch.allclose(
        out["iou_predictions"], iou
    )


def test_plain_sam_refuses_hq_token_only(predictor) -> None:
    with pytest.raises(ValueError, match="hq_token_only=True needs a SAM-HQ model"):
        predictor.predict(box=BOXES_XYXY[0].numpy(), hq_token_only=True)
    with pytest.raises(ValueError, match="hq_token_only=True needs a SAM-HQ model"):
        predictor.predict_torch(None, None, BOXES_XYXY[:1], hq_token_only=True)
    predictor.predict(box=BOXES_XYXY[0].numpy(), hq_token_only=False)  # the default still works


def test_hq_embedding_cache_round_trip(hq_reference, image) -> None:
    """set_embedding restores the early features; a plain-SAM embedding is refused by name."""
    pred = SamPredictor(hq_reference.sam)
    pred.set_image(image)
    cached = pred.embedding
    _, iou, low_res = pred.predict(box=BOXES_XYXY[1].numpy())
    fresh = SamPredictor(hq_reference.sam)
    fresh.set_embedding(cached)
    _, iou2, low_res2 = fresh.predict(box=BOXES_XYXY[1].numpy())
    assert np.array_equal(iou, iou2) and np.array_equal(low_res, low_res2)
    plain = type(cached)(cached.features, cached.original_size, cached.input_size)
    with pytest.raises(ValueError, match="early_features"):
        fresh.set_embedding(plain)
    sam = build_sam("tiny", device="cpu", seed=0)
    with pytest.raises(ValueError, match="not a SAM-HQ"):
        SamPredictor(sam).set_embedding(cached)
