"""SamPredictor: Meta's API, call-order guard, input checks, embedding cache round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_core import ImageEmbedding, SamPredictor

BOX = np.array([10, 10, 60, 70])
POINTS = np.array([[30, 40], [80, 20]])
LABELS = np.array([1, 0])


def test_predict_before_set_image_is_a_runtime_error(tiny) -> None:
    pred = SamPredictor(tiny.sam)
    for call in (
        lambda: pred.predict(box=BOX),
        lambda: pred.predict_torch(None, None, boxes=torch.tensor([[1.0, 1.0, 9.0, 9.0]])),
        pred.get_image_embedding,
        lambda: pred.embedding,
    ):
        with pytest.raises(RuntimeError, match=r"set_image"):
            call()


def test_predict_returns_metas_shapes_and_types(predictor) -> None:
    masks, iou, low_res = predictor.predict(point_coords=POINTS, point_labels=LABELS, box=BOX)
    assert masks.shape == (3, 90, 120) and masks.dtype == bool
    assert iou.shape == (3,) and iou.dtype == np.float32
    assert low_res.shape == (3, 32, 32) and low_res.dtype == np.float32
    logits, _, _ = predictor.predict(box=BOX, multimask_output=False, return_logits=True)
    assert logits.shape == (1, 90, 120) and logits.dtype == np.float32
    again, _, _ = predictor.predict(box=BOX, mask_input=low_res[:1], multimask_output=False)  # iterate
    assert again.shape == (1, 90, 120)


def test_predict_equals_predict_torch_and_sam_forward(predictor, image) -> None:
    masks, iou, low_res = predictor.predict(point_coords=POINTS, point_labels=LABELS, box=BOX)
    t = predictor.transform
    coords = torch.as_tensor(t.apply_coords(POINTS, (90, 120)), dtype=torch.float)[None]
    box = torch.as_tensor(t.apply_boxes(BOX, (90, 120)), dtype=torch.float)
    masks_t, iou_t, low_t = predictor.predict_torch(coords, torch.as_tensor(LABELS)[None], box)
    assert np.array_equal(masks, masks_t[0].numpy()) and np.allclose(iou, iou_t[0].numpy())
    # Meta's batched end-to-end Sam.forward on the same input
    record = {
        "image": torch.as_tensor(t.apply_image(image)).permute(2, 0, 1),
        "original_size": (90, 120),
        "point_coords": coords,
        "point_labels": torch.as_tensor(LABELS)[None],
        "boxes": box,
    }
    (out,) = predictor.model([record], multimask_output=True)
    assert torch.allclose(out["low_res_logits"], low_t, atol=1e-5)
    assert torch.equal(out["masks"], masks_t)


def test_bgr_input_equals_rgb(tiny, image, predictor) -> None:
    bgr = SamPredictor(tiny.sam)
    bgr.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    assert torch.equal(bgr.features, predictor.features)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((20, 30, 3), dtype=np.float32), "uint8"),
        (np.zeros((20, 30), dtype=np.uint8), "H x W x 3"),
        (np.zeros((20, 30, 4), dtype=np.uint8), "H x W x 3"),
        (np.zeros((3, 20, 30), dtype=np.uint8), "H x W x 3"),
        (np.zeros((0, 30, 3), dtype=np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images_are_refused(tiny, bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        SamPredictor(tiny.sam).set_image(bad)


def test_bad_image_format_and_torch_image(tiny, image) -> None:
    pred = SamPredictor(tiny.sam)
    with pytest.raises(ValueError, match="RGB"):
        pred.set_image(image, image_format="rgb")
    with pytest.raises(ValueError, match="longest side 128"):
        pred.set_torch_image(torch.zeros(1, 3, 90, 120), (90, 120))
    with pytest.raises(ValueError, match="resizes to"):
        pred.set_torch_image(torch.zeros(1, 3, 96, 128), (50, 120))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(point_coords=POINTS), "point_labels must be supplied"),
        (dict(point_labels=LABELS), "without point_coords"),
        (dict(point_coords=POINTS, point_labels=LABELS[:1]), "one label per point"),
        (dict(point_coords=POINTS[0], point_labels=LABELS[:1]), "N x 2"),
        (dict(point_coords=POINTS, point_labels=np.array([1, 2])), "foreground"),
        (dict(point_coords=np.array([[130, 10]]), point_labels=np.array([1])), "outside the 120 x 90 image"),
        (dict(point_coords=np.array([[np.nan, 10]]), point_labels=np.array([1])), "NaN"),
        (dict(box=np.array([60, 10, 10, 70])), "degenerate"),
        (dict(box=np.array([10, 10, 10, 70])), "degenerate"),
        (dict(box=np.array([130, 100, 200, 150])), "outside the 120 x 90 image"),
        (dict(box=np.array([[1, 2, 30, 40], [5, 5, 20, 20]])), "predict_torch"),
        (dict(box=BOX, mask_input=np.zeros((1, 16, 16))), "1 x 32 x 32"),
    ],
)
def test_bad_prompts_are_refused(predictor, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


def test_bad_predict_torch_batches_are_refused(predictor) -> None:
    boxes = torch.tensor([[1.0, 1.0, 50.0, 50.0], [2.0, 2.0, 60.0, 60.0]])
    points = torch.tensor([[[10.0, 10.0]]])
    with pytest.raises(ValueError, match="disagree"):
        predictor.predict_torch(points, torch.tensor([[1]]), boxes)
    with pytest.raises(ValueError, match="B x 4"):
        predictor.predict_torch(None, None, boxes[:, :3])
    with pytest.raises(ValueError, match="point_labels must be supplied"):
        predictor.predict_torch(points, None)
    with pytest.raises(ValueError, match="B x 1 x 32 x 32"):
        predictor.predict_torch(None, None, boxes, mask_input=torch.zeros(2, 32, 32))


def test_embedding_round_trip(tiny, image, predictor) -> None:
    embedding = predictor.embedding
    assert isinstance(embedding, ImageEmbedding)
    assert embedding.features.shape == (1, 32, 8, 8)
    assert embedding.original_size == (90, 120) and embedding.input_size == (96, 128)
    assert embedding.nbytes() == 32 * 8 * 8 * 4
    fresh = SamPredictor(tiny.sam)
    fresh.set_embedding(embedding)  # no encoder run
    a = predictor.predict(box=BOX)
    b = fresh.predict(box=BOX)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    with pytest.raises(ValueError, match="another SAM"):
        fresh.set_embedding(ImageEmbedding(torch.zeros(1, 16, 8, 8), (90, 120), (96, 128)))
    with pytest.raises(ValueError, match="does not match"):
        fresh.set_embedding(ImageEmbedding(embedding.features, (90, 120), (90, 120)))
    fresh.reset_image()
    assert not fresh.is_image_set and fresh.features is None
