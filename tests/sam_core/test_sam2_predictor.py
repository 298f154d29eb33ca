"""SAM2ImagePredictor (Meta's API) and SamPredictor driving a SAM 2 model: preprocessing, N x 4 boxes,
normalize_coords, return_logits, the cached embedding and call-order errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sam2_reference import IMAGE_HW, TEST_CONFIG, sample_image

from sam_core import SAM2ImagePredictor, SamPredictor, build_sam

BOXES = np.array([[10.0, 10.0, 60.0, 70.0], [0.0, 5.0, 100.0, 50.0], [50.0, 30.0, 119.0, 89.0]])


@pytest.fixture(scope="module")
def model():
    return build_sam(TEST_CONFIG, device="cpu", seed=0)


@pytest.fixture(scope="module")
def predictor(model) -> SAM2ImagePredictor:
    pred = SAM2ImagePredictor(model)
    pred.set_image(sample_image())
    return pred


def test_preprocessing_is_sam2s(model, predictor: SAM2ImagePredictor) -> None:
    """Meta's SAM2Transforms order: /255, bilinear antialiased resize to S x S, ImageNet mean/std."""
    image = sample_image()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255  # 1 x 3 x H x W
    x = F.interpolate(x, (128, 128), mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    embedding, _ = model.encode_image(x)
    torch.testing.assert_close(predictor.get_image_embedding(), embedding, rtol=1e-5, atol=1e-5)
    sam_predictor = SamPredictor(model)  # the SAM 1 API runs the same SAM 2 preprocessing
    sam_predictor.set_image(image)
    torch.testing.assert_close(sam_predictor.features, embedding, rtol=1e-5, atol=1e-5)


def test_n_boxes_in_one_call(predictor: SAM2ImagePredictor) -> None:
    masks, iou, low_res = predictor.predict(box=BOXES, multimask_output=True)
    assert masks.shape == (3, 3, *IMAGE_HW) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert iou.shape == (3, 3) and ((iou >= 0) & (iou <= 1)).all()  # sigmoid IoU head
    assert low_res.shape == (3, 3, 32, 32) and np.abs(low_res).max() <= 32
    one, one_iou, _ = predictor.predict(box=BOXES[1], multimask_output=True)  # a single box: C x H x W
    assert one.shape == (3, *IMAGE_HW)
    np.testing.assert_allclose(one_iou, iou[1], rtol=0, atol=1e-5)
    assert (one == masks[1]).mean() > 0.999


def test_normalize_coords_and_return_logits(predictor: SAM2ImagePredictor) -> None:
    h, w = IMAGE_HW
    points, labels = np.array([[30.0, 40.0], [80.0, 20.0]]), np.array([1, 0])
    masks, iou, _ = predictor.predict(
        point_coords=points, point_labels=labels, box=BOXES[0], multimask_output=False
    )
    scale = np.array([w, h])
    normed = predictor.predict(
        point_coords=points / scale,
        point_labels=labels,
        box=BOXES[0] / np.tile(scale, 2),
        multimask_output=False,
        normalize_coords=False,
    )
    np.testing.assert_allclose(normed[1], iou, rtol=0, atol=1e-5)
    assert (normed[0] == masks).mean() > 0.999
    logits, _, _ = predictor.predict(
        point_coords=points, point_labels=labels, box=BOXES[0], multimask_output=False, return_logits=True
    )
    assert logits.shape == masks.shape == (1, *IMAGE_HW)
    assert len(np.unique(logits)) > 2  # logits, not 0/1
    np.testing.assert_array_equal(logits > 0, masks > 0)


def test_mask_input_and_sam_predictor_agree(model, predictor: SAM2ImagePredictor) -> None:
    _, _, low_res = predictor.predict(box=BOXES[0], multimask_output=False)
    masks, iou, _ = predictor.predict(box=BOXES[0], mask_input=low_res, multimask_output=False)
    sam_predictor = SamPredictor(model)
    sam_predictor.set_image(sample_image())
    masks1, iou1, _ = sam_predictor.predict(box=BOXES[0], mask_input=low_res, multimask_output=False)
    np.testing.assert_allclose(iou1, iou, rtol=0, atol=1e-4)
    assert (masks1 == (masks > 0)).mean() > 0.999


def test_embedding_cache_and_errors(model) -> None:
    sam_predictor = SamPredictor(model)
    sam_predictor.set_image(sample_image())
    embedding = sam_predictor.embedding
    assert len(embedding.high_res_features) == 2
    expected = 4 * (64 * 8 * 8 + 8 * 32 * 32 + 16 * 16 * 16)  # stride 16 + stride 4 + stride 8, float32
    assert embedding.nbytes() == expected
    restored = SamPredictor(model)
    restored.set_embedding(embedding)
    box = torch.as_tensor(BOXES[:2], dtype=torch.float)
    a = sam_predictor.predict_torch(None, None, sam_predictor.transform.apply_boxes_torch(box, IMAGE_HW))
    b = restored.predict_torch(None, None, restored.transform.apply_boxes_torch(box, IMAGE_HW))
    assert torch.equal(a[0], b[0])

    pred = SAM2ImagePredictor(model)
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(box=BOXES[0])
    pred.set_image(sample_image())
    pred.reset_predictor()
    with pytest.raises(RuntimeError, match="set_image"):
        pred.get_image_embedding()
    with pytest.raises(ValueError, match="max_hole_area"):
        SAM2ImagePredictor(model, max_hole_area=10.0)


def test_mask_only_and_bad_box(predictor: SAM2ImagePredictor) -> None:
    _, _, low_res = predictor.predict(box=BOXES[0], multimask_output=False)
    masks, iou, _ = predictor.predict(mask_input=low_res, multimask_output=True)  # no sparse tokens (Meta)
    assert masks.shape == (3, *IMAGE_HW) and iou.shape == (3,)
    with pytest.raises(ValueError, match="xyxy"):
        predictor.predict(box=np.zeros((2, 3)))


def test_bfloat16_model_runs_and_stays_close(model) -> None:
    bf16 = build_sam(TEST_CONFIG, device="cpu", seed=0, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.pixel_mean.dtype == torch.float32
    fp32_pred, bf16_pred = SAM2ImagePredictor(model), SAM2ImagePredictor(bf16)
    for pred in (fp32_pred, bf16_pred):
        pred.set_image(sample_image())
    assert bf16_pred.get_image_embedding().dtype == torch.bfloat16
    _, iou32, low32 = fp32_pred.predict(box=BOXES, multimask_output=True)
    _, iou16, low16 = bf16_pred.predict(box=BOXES, multimask_output=True)
    assert low16.dtype == np.float32 and low16.shape == low32.shape
    assert np.abs(iou16 - iou32).max() < 0.05
    assert np.abs(low16 - low32).max() < 0.1 * np.abs(low32).max()
