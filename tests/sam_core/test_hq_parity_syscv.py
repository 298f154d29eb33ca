"""SAM-HQ against SysCV's own package (``segment_anything_hq``, pip segment-anything-hq).

SysCV's code trained the released weights, so it is the reference for the decoder's meaning; this
also shows that the correction applied to transformers' SamHQModel in ``conftest.py`` is right.
Two models: the small ViT-HQ of ``hq_reference`` (every prompt case), and SysCV's full-size light
model ``vit_tiny`` (TinyViT-5M + HQ decoder), saved as its ``sam_hq_vit_tiny.pth`` layout.
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from reference_packages import import_reference, randomize_reference_
from test_mobile_sam import IMAGE_HW, LABELS, POINTS_XY, PROMPTS, prompts_for

from sam_core import CheckpointError, SamPredictor, build_sam

RTOL = 1e-4
PIXEL_AGREEMENT = 0.999


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def _syscv_small(config):
    """SysCV's modules at the size of a small sam_core ``SamConfig`` (ViT encoder)."""
    hq = import_reference("segment_anything_hq")
    m = hq.modeling
    grid = config.image_embedding_size
    return m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(config.encoder_global_attn_indexes),
            window_size=config.window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=m.MaskDecoderHQ(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=m.TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            vit_dim=config.encoder_embed_dim,
        ),
    ).eval()


def _pair(sam, ref, image: np.ndarray) -> SimpleNamespace:
    hq = import_reference("segment_anything_hq")
    pred = SamPredictor(sam)
    pred.set_image(image)
    transformed = torch.as_tensor(pred.transform.apply_image(image)).permute(2, 0, 1)[None]  # 1 x 3 x h x w
    ref_pred = hq.SamPredictor(ref)
    with torch.no_grad():
        ref_pred.set_torch_image(transformed, IMAGE_HW)
    return SimpleNamespace(pred=pred, ref_pred=ref_pred, ref=ref)


def _compare(pair, points, labels, boxes, *, multimask: bool, hq_token_only: bool, mask_input=None) -> None:
    masks, iou, low_res = pair.pred.predict_torch(
        points, labels, boxes, mask_input, multimask_output=multimask, hq_token_only=hq_token_only
    )
    with torch.no_grad():
        ref_masks, ref_iou, ref_low_res = pair.ref_pred.predict_torch(
            points, labels, boxes, mask_input, multimask_output=multimask, hq_token_only=hq_token_only
        )
    assert low_res.shape == ref_low_res.shape and low_res.shape[1] == 1  # one mask per prompt (SysCV)
    assert iou.shape == ref_iou.shape == (len(low_res), 1)
    assert _rel(low_res, ref_low_res) <= RTOL and _rel(iou, ref_iou) <= RTOL
    assert masks.shape == ref_masks.shape == (len(low_res), 1, *IMAGE_HW)
    # not trivially empty/full (random full-size weights give small objects: >= 50 of 10800 pixels)
    assert 0.005 < masks.float().mean() < 0.98
    assert (masks == ref_masks).float().mean() >= PIXEL_AGREEMENT


@pytest.fixture(scope="module")
def small(hq_reference, image):
    ref = _syscv_small(hq_reference.config)
    ref.load_state_dict(hq_reference.sam.state_dict(), strict=True)  # sam_core keys = SysCV's keys
    return _pair(hq_reference.sam, ref, image)


@pytest.mark.parametrize("hq_token_only", [False, True], ids=["sam+hq", "hq-only"])
@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_small_hq_matches_syscv(small, prompt: str, multimask: bool, hq_token_only: bool) -> None:
    points, labels, boxes = prompts_for(small.pred, prompt)
    _compare(small, points, labels, boxes, multimask=multimask, hq_token_only=hq_token_only)


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> SimpleNamespace:
    hq = import_reference("segment_anything_hq")
    ref = hq.sam_model_registry["vit_tiny"]()
    randomize_reference_(ref, seed=1)
    ref.eval()  # after the weights: TinyViT caches its attention-bias table in eval()
    path = tmp_path_factory.mktemp("sam_hq") / "sam_hq_vit_tiny.pth"
    torch.save(ref.state_dict(), path)
    pair = _pair(build_sam("hq_vit_tiny", path, device="cpu"), ref, image)
    pair.path = path
    return pair


def test_light_hq_embedding_and_early_features_match_syscv(light) -> None:
    emb = light.pred.embedding
    assert emb.features.shape == light.ref_pred.features.shape == (1, 256, 64, 64)
    (ref_early,) = light.ref_pred.interm_features  # TinyViT's first attention stage
    assert emb.early_features.shape == ref_early.shape == (1, 64, 64, 160)
    assert _rel(emb.features, light.ref_pred.features) <= RTOL
    assert _rel(emb.early_features, ref_early) <= RTOL
    assert emb.nbytes() == 4 * (256 * 64 * 64 + 64 * 64 * 160)


@pytest.mark.parametrize(
    "prompt, multimask, hq_token_only",
    [("box", True, False), ("three-boxes+points", False, True), ("box+points", False, False)],
)
def test_light_hq_matches_syscv(light, prompt: str, multimask: bool, hq_token_only: bool) -> None:
    points, labels, boxes = prompts_for(light.pred, prompt)
    _compare(light, points, labels, boxes, multimask=multimask, hq_token_only=hq_token_only)


def test_light_hq_mask_prompt_matches_syscv(light) -> None:
    points = light.pred.transform.apply_coords_torch(POINTS_XY, IMAGE_HW)
    mask_input = 3 * torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(3))
    _compare(light, points, LABELS, None, multimask=True, hq_token_only=False, mask_input=mask_input)


def test_hq_checkpoint_into_plain_models_refused_by_name(light) -> None:
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): mask_decoder\.compress_vit_feat"):
        build_sam("vit_t", light.path, device="cpu")  # SAM-HQ light weights into MobileSAM
    with pytest.raises(CheckpointError, match="mis-shaped"):
        build_sam("hq_vit_b", light.path, device="meta")
