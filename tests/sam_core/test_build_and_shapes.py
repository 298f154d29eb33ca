"""Presets at Meta's real sizes, the HF <-> Meta key map at ViT-B, builders, seeds, device/dtype."""

from __future__ import annotations

import pytest
import torch
from transformers import SamConfig as HFSamConfig
from transformers import SamModel

from sam_core import SAM_CONFIGS, SamConfig, build_sam, resolve_device, sam_model_registry
from sam_core.build import sam_from_config
from sam_core.device import resolve_dtype
from sam_core.hf_format import HF_TIED_ALIASES, hf_key_to_meta, sam_config_from_hf


def test_presets_are_metas_sizes() -> None:
    sizes = {
        name: (c.encoder_embed_dim, c.encoder_depth, c.encoder_num_heads, c.encoder_global_attn_indexes)
        for name, c in SAM_CONFIGS.items()
    }
    assert sizes["vit_b"] == (768, 12, 12, (2, 5, 8, 11))
    assert sizes["vit_l"] == (1024, 24, 16, (5, 11, 17, 23))
    assert sizes["vit_h"] == (1280, 32, 16, (7, 15, 23, 31))
    for name in ("vit_b", "vit_l", "vit_h"):
        c = SAM_CONFIGS[name]
        assert (c.image_size, c.patch_size, c.window_size, c.prompt_embed_dim, c.mask_input_size) == (
            1024,
            16,
            14,
            256,
            256,
        )
    assert SAM_CONFIGS["tiny"].image_size == 128 and SAM_CONFIGS["tiny"].image_embedding_size == 8


def test_vit_b_state_dict_equals_hf_vit_base_through_the_key_map() -> None:
    """Every HF vit-base tensor maps to exactly one of ours (same shape), and every one of ours is hit."""
    hf_config = HFSamConfig()  # transformers' defaults are the ViT-B sizes of facebook/sam-vit-base
    assert sam_config_from_hf(hf_config.to_dict()) == SAM_CONFIGS["vit_b"]
    with torch.device("meta"):
        hf_state = SamModel(hf_config).state_dict()
    ours = build_sam("vit_b", seed=0, device="cpu").state_dict()  # real random init at full size
    mapped: dict[str, str] = {}
    for key in hf_state:
        name = hf_key_to_meta(key, SAM_CONFIGS["vit_b"])
        assert name is not None, f"unmapped HF key {key}"
        assert name in ours, f"{key} -> {name} is not a parameter of ours"
        assert tuple(hf_state[key].shape) == tuple(ours[name].shape), key
        if key in HF_TIED_ALIASES:
            assert name == mapped[HF_TIED_ALIASES[key]]  # the tied copy of the Fourier matrix
            continue
        assert name not in mapped.values(), f"two HF keys map to {name}"
        mapped[key] = name
    assert set(mapped.values()) == set(ours)
    assert len(ours) == len(hf_state) - len(HF_TIED_ALIASES)
    # A few names and shapes exactly as in Meta's sam_vit_b_01ec64.pth
    assert ours["image_encoder.pos_embed"].shape == (1, 64, 64, 768)
    assert ours["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, 64)  # windowed (14 x 14)
    assert ours["image_encoder.blocks.2.attn.rel_pos_h"].shape == (127, 64)  # global (64 x 64)
    assert ours["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape == (2, 128)
    assert ours["mask_decoder.output_hypernetworks_mlps.3.layers.2.weight"].shape == (32, 256)


def test_vit_b_encoder_output_shape_at_1024() -> None:
    with torch.device("meta"):  # real ViT-B shapes through every block; no memory, no compute
        sam = sam_from_config(SAM_CONFIGS["vit_b"])
        features = sam.image_encoder(torch.empty(1, 3, 1024, 1024))
    assert tuple(features.shape) == (1, 256, 64, 64)


def test_registry_and_seeds() -> None:
    sam1 = {"default", "vit_h", "vit_l", "vit_b"}
    assert sam1 <= set(sam_model_registry)
    sam2 = {f"{v}_hiera_{s}" for v in ("sam2", "sam2.1") for s in ("tiny", "small", "base_plus", "large")}
    assert {k for k in sam_model_registry if k.startswith("sam2")} == sam2
    assert sam_model_registry["default"] is sam_model_registry["vit_h"]
    state = torch.random.get_rng_state()
    a = build_sam("tiny", seed=1, device="cpu")
    b = build_sam("tiny", seed=1, device="cpu")
    c = build_sam("tiny", seed=2, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    w = "image_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert not a.training and a.device == torch.device("cpu") and a.dtype == torch.float32


def test_bad_model_type_config_device_and_dtype() -> None:
    with pytest.raises(ValueError, match="unknown SAM model_type 'vit_x'"):
        build_sam("vit_x")
    with pytest.raises(ValueError, match="auto"):
        build_sam("auto")
    with pytest.raises(ValueError, match="encoder_num_heads"):
        SamConfig(
            encoder_embed_dim=30, encoder_depth=2, encoder_num_heads=4, encoder_global_attn_indexes=(1,)
        )
    with pytest.raises(ValueError, match="outside"):
        SamConfig(
            encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(5,)
        )
    with pytest.raises(ValueError, match="unsupported dtype"):
        resolve_dtype(torch.int8)
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype(None) == torch.float32
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None) in (torch.device("cpu"), torch.device("mps"))
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
