"""Helpers for the SAM 2 tests: a transformers ``Sam2Model`` with the architecture of a Sam2Config and
non-trivial random weights, and sam_core's Sam2 loaded from its save_pretrained folder.

transformers is imported here (tests only) as the independent reference; sam_core never imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sam_core import SAM2_CONFIGS, Sam2, Sam2Config, build_sam

TEST_CONFIG: Sam2Config = SAM2_CONFIGS["sam2_test"]
IMAGE_HW = (90, 120)  # non-square: exercises SAM 2's aspect-changing resize


def hf_sam2_config_for(config: Sam2Config):
    """The transformers ``Sam2Config`` with the same architecture as ``config`` (eager attention)."""
    from transformers import Sam2Config as HFSam2Config

    s = config.image_size
    hf = HFSam2Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "hidden_size": config.embed_dim,
                "num_attention_heads": config.num_heads,
                "image_size": [s, s],
                "blocks_per_stage": list(config.stages),
                "embed_dim_per_stage": list(config.stage_dims),
                "num_attention_heads_per_stage": [config.num_heads * 2**i for i in range(4)],
                "window_size_per_stage": list(config.window_spec),
                "global_attention_blocks": list(config.global_att_blocks),
                "window_positional_embedding_background_size": list(config.window_pos_embed_bkg_spatial_size),
                "mlp_ratio": config.mlp_ratio,
            },
            "backbone_channel_list": list(config.stage_dims[::-1]),
            "backbone_feature_sizes": [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
            "fpn_hidden_size": config.prompt_embed_dim,
        },
        prompt_encoder_config={
            "hidden_size": config.prompt_embed_dim,
            "image_size": s,
            "patch_size": 16,
            "mask_input_channels": config.mask_in_chans,
        },
        mask_decoder_config={
            "hidden_size": config.prompt_embed_dim,
            "mlp_dim": config.decoder_mlp_dim,
            "num_hidden_layers": config.decoder_depth,
            "num_attention_heads": config.decoder_num_heads,
            "num_multimask_outputs": config.num_multimask_outputs,
            "iou_head_depth": config.iou_head_depth,
            "iou_head_hidden_dim": config.iou_head_hidden_dim,
        },
    )
    hf._attn_implementation = "eager"
    return hf


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial values for every parameter (HF zero-initialises position tables, biases, ...),
    and one random Fourier matrix for both of Sam2Model's copies (one tensor in Meta's model)."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen)
        if "pos_embed" in name:
            param.copy_(0.2 * noise)
        elif name.endswith("bias"):
            param.copy_(0.1 * noise)
        elif "layer_norm" in name:
            param.copy_(1 + 0.1 * noise)
        elif param.ndim >= 2:
            param.copy_(noise / math.sqrt(param[0].numel()))
        else:
            param.copy_(noise)
    fourier = torch.randn(model.shared_image_embedding.positional_embedding.shape, generator=gen)
    model.shared_image_embedding.positional_embedding.copy_(fourier)
    model.prompt_encoder.shared_embedding.positional_embedding.copy_(fourier)


@dataclass
class Sam2Reference:
    """A transformers Sam2Model and sam_core's Sam2 loaded from its save_pretrained folder."""

    config: Sam2Config
    hf: torch.nn.Module
    folder: Path
    sam: Sam2


def make_reference(folder: Path, seed: int = 0) -> Sam2Reference:
    from transformers import Sam2Model

    hf = Sam2Model(hf_sam2_config_for(TEST_CONFIG)).eval()
    randomize_(hf, seed)
    hf.save_pretrained(folder)
    sam = build_sam(TEST_CONFIG, folder, device="cpu")
    return Sam2Reference(TEST_CONFIG, hf, folder, sam)


def sample_image() -> np.ndarray:
    """A 90 x 120 RGB uint8 image: a disc on a background, plus noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: IMAGE_HW[0], : IMAGE_HW[1]]
    disc = ((yy - 40) ** 2 + (xx - 70) ** 2 < 25**2)[..., None]
    base = np.where(disc, np.array([200, 60, 40]), np.array([30, 90, 160]))
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
