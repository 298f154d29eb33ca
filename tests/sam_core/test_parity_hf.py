"""Numerical parity with transformers' SamModel on identical (random, non-trivial) weights.

sam_core loads the weights from SamModel.save_pretrained through its HF -> Meta key map; both models
get the same preprocessed pixels and the same transformed prompt coordinates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil, _normalize_coordinates

from sam_core import SamPredictor

IMAGE_HW = (90, 120)  # the ``image`` fixture's (H, W)

RTOL = 1e-4  # max |ours - ref| / max |ref|
PIXEL_AGREEMENT = 0.999

BOXES_XYXY = torch.tensor([[10.0, 10.0, 60.0, 70.0], [0.0, 5.0, 100.0, 50.0], [50.0, 30.0, 119.0, 89.0]])
POINTS_XY = torch.tensor([[[30.0, 40.0], [80.0, 20.0]]])  # 1 x 2 x 2, original-image pixels
LABELS = torch.tensor([[1, 0]])


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def _pixels(pred: SamPredictor, image: np.ndarray) -> torch.Tensor:
    transformed = torch.as_tensor(pred.transform.apply_image(image)).permute(2, 0, 1)[None]  # 1 x 3 x h x w
    return pred.model.preprocess(transformed)  # 1 x 3 x S x S


@torch.no_grad()
def _hf_predict(ref, pixels, points=None, labels=None, boxes=None, masks=None, multimask=True):
    kwargs = {}
    if points is not None:
        kwargs.update(input_points=points[None], input_labels=labels[None])  # 1 x B x N x 2, 1 x B x N
    if boxes is not None:
        kwargs["input_boxes"] = boxes[None]  # 1 x B x 4
    if masks is not None:
        kwargs["input_masks"] = masks  # 1 x 1 x m x m
    out = ref.hf(pixel_values=pixels, multimask_output=multimask, **kwargs)
    return out.pred_masks[0], out.iou_scores[0]  # B x M x m x m, B x M


def test_image_embedding_matches_hf(reference, image: np.ndarray) -> None:
    pred = SamPredictor(reference.sam)
    pred.set_image(image)
    with torch.no_grad():
        hf_features = reference.hf.get_image_embeddings(_pixels(pred, image))
    assert pred.features.shape == hf_features.shape == (1, 32, 8, 8)
    assert hf_features.abs().max() > 0.5  # non-trivial weights
    assert _rel(pred.features, hf_features) <= RTOL


PROMPTS = {
    "points": dict(points=True),
    "box": dict(boxes=slice(0, 1)),
    "box+points": dict(points=True, boxes=slice(0, 1)),
    "three-boxes": dict(boxes=slice(0, 3)),
    "three-boxes+points": dict(points=True, boxes=slice(0, 3)),
}


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_decoder_matches_hf(reference, image: np.ndarray, prompt: str, multimask: bool) -> None:
    pred = SamPredictor(reference.sam)
    pred.set_image(image)
    spec = PROMPTS[prompt]
    boxes = None
    if "boxes" in spec:
        boxes = pred.transform.apply_boxes_torch(BOXES_XYXY[spec["boxes"]], IMAGE_HW)  # B x 4
    points = labels = None
    if spec.get("points"):
        batch = 1 if boxes is None else len(boxes)
        points = pred.transform.apply_coords_torch(POINTS_XY, IMAGE_HW).expand(batch, -1, -1)  # B x 2 x 2
        labels = LABELS.expand(batch, -1)

    masks, iou, low_res = pred.predict_torch(points, labels, boxes, multimask_output=multimask)
    hf_low_res, hf_iou = _hf_predict(
        reference, _pixels(pred, image), points, labels, boxes, multimask=multimask
    )

    num = 3 if multimask else 1
    assert low_res.shape == hf_low_res.shape == (len(masks), num, 32, 32)
    assert low_res.dtype == iou.dtype == torch.float32
    assert _rel(low_res, hf_low_res) <= RTOL
    assert _rel(iou, hf_iou) <= RTOL
    # Binary masks at the original size, HF side through transformers' own post-processing.
    processor = SamImageProcessorPil(pad_size={"height": 128, "width": 128})
    hf_masks = processor.post_process_masks([hf_low_res], [IMAGE_HW], [pred.input_size])[0]
    assert masks.shape == hf_masks.shape == (len(masks), num, *IMAGE_HW) and masks.dtype == torch.bool
    assert 0.02 < masks.float().mean() < 0.98  # masks are not trivially empty/full
    assert (masks == hf_masks).float().mean() >= PIXEL_AGREEMENT


def test_mask_prompt_matches_hf(reference, image: np.ndarray) -> None:
    pred = SamPredictor(reference.sam)
    pred.set_image(image)
    points = pred.transform.apply_coords_torch(POINTS_XY, IMAGE_HW)
    mask_input = 3 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    _, iou, low_res = pred.predict_torch(points, LABELS, mask_input=mask_input)
    _, _, no_mask_low_res = pred.predict_torch(points, LABELS)
    hf_low_res, hf_iou = _hf_predict(reference, _pixels(pred, image), points, LABELS, masks=mask_input)
    assert _rel(low_res, hf_low_res) <= RTOL and _rel(iou, hf_iou) <= RTOL
    assert _rel(low_res, no_mask_low_res) > 1e-2  # the mask prompt changes the answer


def test_preprocessing_matches_hf_processor(tiny, image: np.ndarray) -> None:
    pred = SamPredictor(tiny.sam)
    processor = SamImageProcessorPil(size={"longest_edge": 128}, pad_size={"height": 128, "width": 128})
    hf = processor(images=image, return_tensors="pt")
    ours = _pixels(pred, image)
    assert ours.shape == hf["pixel_values"].shape == (1, 3, 128, 128)
    assert float((ours - hf["pixel_values"]).abs().max()) < 1e-5
    pred.set_image(image)
    assert pred.input_size == tuple(hf["reshaped_input_sizes"][0].tolist()) == (96, 128)
    assert pred.original_size == IMAGE_HW


def test_coordinate_transforms_match_hf(tiny) -> None:
    transform = SamPredictor(tiny.sam).transform
    points = np.array([[0.0, 0.0], [119.0, 89.0], [33.3, 41.7]])
    boxes = BOXES_XYXY.numpy().astype(np.float64)
    np.testing.assert_allclose(
        transform.apply_coords(points, IMAGE_HW), _normalize_coordinates(128, points, IMAGE_HW)
    )
    np.testing.assert_allclose(
        transform.apply_boxes(boxes, IMAGE_HW),
        _normalize_coordinates(128, boxes, IMAGE_HW, is_bounding_box=True),
    )
    np.testing.assert_allclose(
        transform.apply_boxes_torch(BOXES_XYXY, IMAGE_HW).numpy(),
        transform.apply_boxes(boxes, IMAGE_HW),
        rtol=1e-6,
    )
