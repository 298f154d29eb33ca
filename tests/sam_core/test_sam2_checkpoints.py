"""SAM 2 loading: Meta's .pt layout (video tensors skipped by name, the rest strict), the Hugging Face
layout, and the real sam2.1_hiera_tiny key set and shapes (built on the meta device, no forward)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sam2_reference import TEST_CONFIG, Sam2Reference, make_reference, sample_image

from sam_core import CheckpointError, SamPredictor, build_sam, sam_model_registry
from sam_core.sam2 import SAM2_CONFIGS, sam2_from_config
from sam_core.sam2.checkpoint import hf_to_ours, meta_to_ours, ours_to_meta

VIDEO_KEYS = {
    "memory_attention.layers.0.self_attn.q_proj.weight": (4, 4),
    "memory_encoder.fuser.layers.0.gamma": (4,),
    "maskmem_tpos_enc": (7, 1, 1, 4),
    "no_mem_pos_enc": (1, 1, 4),
    "no_obj_ptr": (1, 4),
    "obj_ptr_proj.layers.0.weight": (4, 4),
    "obj_ptr_tpos_proj.weight": (4, 4),
    "mask_downsample.weight": (1, 1, 4, 4),
    "no_obj_embed_spatial": (1, 4),
}


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Sam2Reference:
    return make_reference(Path(tmp_path_factory.mktemp("hf_sam2_ckpt")), seed=3)


def _meta_file(ref: Sam2Reference, path: Path, *, extra: dict[str, torch.Tensor] | None = None) -> Path:
    state = ours_to_meta(ref.sam.state_dict())
    state.update({k: torch.randn(shape) for k, shape in VIDEO_KEYS.items()})
    state.update(extra or {})
    torch.save({"model": state}, path)
    return path


def _outputs(model) -> tuple[torch.Tensor, ...]:
    pred = SamPredictor(model)
    pred.set_image(sample_image())
    boxes = torch.tensor([[10.0, 10.0, 80.0, 100.0], [40.0, 0.0, 120.0, 60.0]])
    iou, low_res = pred.predict_low_res_torch(None, None, boxes, None, False)
    return (pred.features, *pred.high_res_features, iou, low_res)


def test_meta_layout_loads_to_identical_outputs(ref: Sam2Reference, tmp_path: Path) -> None:
    path = _meta_file(ref, tmp_path / "sam2_test.pt")
    saved = torch.load(path, weights_only=True)["model"]
    assert "sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight" in saved
    assert "sam_prompt_encoder.point_embeddings.3.weight" in saved and "no_mem_embed" in saved
    model = build_sam(TEST_CONFIG, path, device="cpu")
    for ours, theirs in zip(_outputs(model), _outputs(ref.sam), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"add": "memory_attention_extra.weight"}, "memory_attention_extra.weight"),  # not on the list
        ({"add": "sam_mask_decoder.extra_head.weight"}, "mask_decoder.extra_head.weight"),
        ({"drop": "sam_mask_decoder.conv_s0.weight"}, "mask_decoder.conv_s0.weight"),
        ({"drop": "no_mem_embed"}, "no_mem_embed"),
        ({"reshape": "image_encoder.trunk.pos_embed_window"}, "image_encoder.trunk.pos_embed_window"),
    ],
)
def test_meta_layout_is_strict_on_image_keys(ref, tmp_path: Path, change: dict, named: str) -> None:
    state = ours_to_meta(ref.sam.state_dict())
    if "add" in change:
        state[change["add"]] = torch.zeros(2)
    if "drop" in change:
        del state[change["drop"]]
    if "reshape" in change:
        state[change["reshape"]] = torch.zeros(1, 2, 3)
    path = tmp_path / "bad.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        build_sam(TEST_CONFIG, path, device="cpu")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": Path("configs/sam2.1/sam2.1_hiera_t.yaml")}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        build_sam(TEST_CONFIG, path, device="cpu")


def test_hf_folder_and_auto(ref: Sam2Reference) -> None:
    model = build_sam("auto", ref.folder, device="cpu")
    assert model.config.architecture() == TEST_CONFIG.architecture()
    with pytest.raises(CheckpointError, match="embed_dim"):
        build_sam(SAM2_CONFIGS["sam2.1_hiera_tiny"], ref.folder, device="cpu")


def test_meta_round_trip_of_key_names(ref: Sam2Reference) -> None:
    ours = ref.sam.state_dict()
    assert meta_to_ours(ours_to_meta(ours)).keys() == ours.keys()


def test_real_tiny_key_set_and_shapes_match_meta_and_hf_layouts() -> None:
    from transformers import Sam2Config as HFSam2Config
    from transformers import Sam2Model

    with torch.device("meta"):
        ours = sam2_from_config(SAM2_CONFIGS["sam2.1_hiera_tiny"])
        hf = Sam2Model(HFSam2Config())  # transformers' defaults are sam2.1-hiera-tiny's
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    mapped = {
        k: tuple(v.shape) for k, v in hf_to_ours(hf.state_dict(), SAM2_CONFIGS["sam2.1_hiera_tiny"]).items()
    }
    assert mapped == shapes
    meta = {k: tuple(v.shape) for k, v in ours_to_meta(ours.state_dict()).items()}
    # spot checks against Meta's checkpoint layout (sam2.1_hiera_tiny.pt)
    assert meta["image_encoder.trunk.pos_embed"] == (1, 96, 7, 7)
    assert meta["image_encoder.trunk.pos_embed_window"] == (1, 96, 8, 8)
    assert meta["image_encoder.trunk.blocks.1.proj.weight"] == (192, 96)  # first block of stage 2
    assert meta["image_encoder.trunk.blocks.11.mlp.layers.1.weight"] == (768, 3072)
    assert "image_encoder.trunk.blocks.12.norm1.weight" not in meta  # 1 + 2 + 7 + 2 blocks
    assert meta["image_encoder.neck.convs.0.conv.weight"] == (256, 768, 1, 1)  # coarsest first
    assert meta["image_encoder.neck.convs.3.conv.weight"] == (256, 96, 1, 1)
    assert meta["sam_mask_decoder.conv_s0.weight"] == (32, 256, 1, 1)
    assert meta["sam_mask_decoder.conv_s1.weight"] == (64, 256, 1, 1)
    assert meta["sam_mask_decoder.pred_obj_score_head.layers.2.weight"] == (1, 256)
    assert meta["sam_mask_decoder.transformer.layers.1.mlp.layers.0.weight"] == (2048, 256)
    assert meta["sam_prompt_encoder.point_embeddings.3.weight"] == (1, 256)
    assert meta["no_mem_embed"] == (1, 1, 256)
    assert not any(k.startswith(("memory_", "obj_ptr", "maskmem")) for k in meta)
    assert sum(v.numel() for v in ours.state_dict().values()) == sum(
        v.numel() for k, v in hf.state_dict().items() if k != "shared_image_embedding.positional_embedding"
    )


def test_registry_has_every_preset() -> None:
    for name in SAM2_CONFIGS:
        if name != "sam2_test":
            assert name in sam_model_registry
    assert SAM2_CONFIGS["sam2.1_hiera_large"].stages == (2, 6, 36, 4)
    assert SAM2_CONFIGS["sam2_hiera_base_plus"] == SAM2_CONFIGS["sam2.1_hiera_base_plus"]


def test_hf_layout_refuses_differing_fourier_copies(ref: Sam2Reference) -> None:
    state = {k: v.clone() for k, v in ref.hf.state_dict().items()}
    state["prompt_encoder.shared_embedding.positional_embedding"] += 1.0
    with pytest.raises(CheckpointError, match="positional_encoding_gaussian_matrix differ"):
        hf_to_ours(state, TEST_CONFIG)
    state = dict(ref.hf.state_dict(), **{"vision_encoder.backbone.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="vision_encoder.backbone.extra.weight"):
        hf_to_ours(state, TEST_CONFIG)
