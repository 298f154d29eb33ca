"""MobileSAM ("vit_t"): MobileSAM's own model, saved in its own .pt layout, loads and matches.

The reference is ``mobile_sam`` (pip mobilesam-mirror) at full size (TinyViT-5M at 1024 px) with
random non-trivial weights; both predictors get the same resized image and prompt coordinates.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from reference_packages import import_reference, randomize_reference_

from sam_core import CheckpointError, SamPredictor, build_sam, sam_model_registry

IMAGE_HW = (90, 120)
RTOL = 1e-4
PIXEL_AGREEMENT = 0.999
BOXES_XYXY = torch.tensor([[10.0, 10.0, 60.0, 70.0], [0.0, 5.0, 100.0, 50.0], [50.0, 30.0, 119.0, 89.0]])
POINTS_XY = torch.tensor([[[30.0, 40.0], [80.0, 20.0]]])
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


def prompts_for(pred: SamPredictor, prompt: str):
    """(points B x N x 2, labels B x N, boxes B x 4) in the model's input frame, or Nones."""
    spec = PROMPTS[prompt]
    boxes = points = labels = None
    if "boxes" in spec:
        boxes = pred.transform.apply_boxes_torch(BOXES_XYXY[spec["boxes"]], IMAGE_HW)
    if spec.get("points"):
        batch = 1 if boxes is None else len(boxes)
        points = pred.transform.apply_coords_torch(POINTS_XY, IMAGE_HW).expand(batch, -1, -1)
        labels = LABELS.expand(batch, -1)
    return points, labels, boxes


@pytest.fixture(scope="module")
def mobile(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> SimpleNamespace:
    mobile_sam = import_reference("mobile_sam")
    ref = mobile_sam.sam_model_registry["vit_t"]()
    randomize_reference_(ref, seed=0)
    ref.eval()  # after the weights: TinyViT caches its attention-bias table in eval()
    path = tmp_path_factory.mktemp("mobile_sam") / "mobile_sam.pt"
    torch.save(ref.state_dict(), path)  # MobileSAM's layout, as its released mobile_sam.pt
    pred = SamPredictor(build_sam("vit_t", path, device="cpu"))
    pred.set_image(image)
    transformed = torch.as_tensor(pred.transform.apply_image(image)).permute(2, 0, 1)[None]  # 1 x 3 x h x w
    ref_pred = mobile_sam.SamPredictor(ref)
    with torch.no_grad():
        ref_pred.set_torch_image(transformed, IMAGE_HW)
    return SimpleNamespace(ref=ref, path=path, pred=pred, ref_pred=ref_pred)


def test_embedding_matches_mobile_sam(mobile) -> None:
    ours, ref = mobile.pred.get_image_embedding(), mobile.ref_pred.get_image_embedding()
    assert ours.shape == ref.shape == (1, 256, 64, 64) and ref.abs().max() > 0.5
    assert _rel(ours, ref) <= RTOL
    assert mobile.pred.embedding.early_features is None  # MobileSAM has no HQ head


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_decoder_matches_mobile_sam(mobile, prompt: str, multimask: bool) -> None:
    points, labels, boxes = prompts_for(mobile.pred, prompt)
    masks, iou, low_res = mobile.pred.predict_torch(points, labels, boxes, multimask_output=multimask)
    with torch.no_grad():
        ref_masks, ref_iou, ref_low_res = mobile.ref_pred.predict_torch(
            points, labels, boxes, multimask_output=multimask
        )
    num = 3 if multimask else 1
    assert low_res.shape == ref_low_res.shape == (len(masks), num, 256, 256)
    assert _rel(low_res, ref_low_res) <= RTOL and _rel(iou, ref_iou) <= RTOL
    assert masks.shape == ref_masks.shape == (len(masks), num, *IMAGE_HW)
    assert 0.02 < masks.float().mean() < 0.98
    assert (masks == ref_masks).float().mean() >= PIXEL_AGREEMENT


def test_mask_prompt_matches_mobile_sam(mobile) -> None:
    points = mobile.pred.transform.apply_coords_torch(POINTS_XY, IMAGE_HW)
    mask_input = 3 * torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(3))
    _, iou, low_res = mobile.pred.predict_torch(points, LABELS, mask_input=mask_input)
    with torch.no_grad():
        _, ref_iou, ref_low_res = mobile.ref_pred.predict_torch(points, LABELS, mask_input=mask_input)
    assert _rel(low_res, ref_low_res) <= RTOL and _rel(iou, ref_iou) <= RTOL


def test_registry_builds_vit_t_from_mobile_sam_pt(mobile) -> None:
    sam = sam_model_registry["vit_t"](mobile.path)
    ours = sam.state_dict()
    released = mobile.ref.state_dict()
    # everything but TinyViT's unused ImageNet classifier head matches by name and value
    dropped = {k for k in released if k.startswith(("image_encoder.head.", "image_encoder.norm_head."))}
    assert dropped and set(released) - dropped == set(ours)
    assert all(torch.equal(ours[k], released[k]) for k in ours)
    with pytest.raises(ValueError, match="hq_token_only=True needs a SAM-HQ model"):
        mobile.pred.predict(box=BOXES_XYXY[0].numpy(), hq_token_only=True)


def test_corrupt_or_mismatched_mobile_sam_refused_by_name(mobile, tmp_path) -> None:
    state = mobile.ref.state_dict()
    del state["image_encoder.layers.1.blocks.0.attn.attention_biases"]
    state["image_encoder.layers.2.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad_mobile_sam.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as err:
        build_sam("vit_t", bad, device="cpu")
    assert "missing key(s): image_encoder.layers.1.blocks.0.attn.attention_biases" in str(err.value)
    assert "image_encoder.layers.2.blocks.0.attn.qkv.weight: checkpoint (3, 3)" in str(err.value)
    with pytest.raises(CheckpointError, match="unexpected key"):  # MobileSAM weights into ViT-B
        build_sam("vit_b", mobile.path, device="meta")
