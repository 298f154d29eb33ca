"""Build a SAM 2 image model from a preset name or Sam2Config, optionally loading weights.

Mirrors ``sam_core.build.build_sam`` (device, dtype through ``resolve_dtype``, seed, strict loading);
``sam_core.build_sam`` forwards SAM 2 names here, and ``SAM2_REGISTRY`` joins ``sam_model_registry``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from ..checkpoint import resolve_checkpoint
from ..materialize import materialize
from ..transformer import TwoWayTransformer
from .checkpoint import load_sam2_state_dict
from .config import SAM2_CONFIGS, Sam2Config
from .hf_config import is_sam2_hf_config, read_raw_config, read_sam2_hf_config
from .hiera import Hiera
from .mask_decoder import Sam2MaskDecoder
from .model import Sam2
from .neck import FpnNeck, ImageEncoder
from .prompt_encoder import Sam2PromptEncoder

__all__ = ["build_sam2", "sam2_from_config", "is_sam2_model_type", "SAM2_REGISTRY"]


def is_sam2_model_type(model_type: object, checkpoint: str | os.PathLike | None = None) -> bool:
    """True for a SAM 2 preset name or Sam2Config, or 'auto' with a Hugging Face SAM 2 config.json."""
    if isinstance(model_type, Sam2Config):
        return True
    if model_type in SAM2_CONFIGS:
        return True
    if model_type == "auto" and checkpoint is not None:
        _, config_path = resolve_checkpoint(checkpoint)
        return config_path is not None and is_sam2_hf_config(read_raw_config(config_path))
    return False


def build_sam2(
    model_type: str | Sam2Config = "sam2.1_hiera_tiny",
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    seed: int | None = None,
) -> Sam2:
    """A SAM 2 image model in eval mode on ``device`` (None: cuda > mps > cpu) in ``dtype``.

    Args:
        model_type: a ``SAM2_CONFIGS`` key ("sam2.1_hiera_tiny", ..., "sam2_hiera_large"), a
            Sam2Config, or "auto" to follow a Hugging Face config.json.
        checkpoint: Meta's .pt (``{"model": state_dict}``), a Hugging Face Sam2Model folder
            (config.json + model.safetensors) or a Hub id like "facebook/sam2.1-hiera-tiny"; None for
            random weights. Video-only tensors are skipped by name; the rest loads strictly.
        dtype: None -> float32; "auto" -> bf16 where native (``sam_core.device.resolve_dtype``).
        seed: makes the random initialisation deterministic (without touching the global RNG).
    """
    config = _resolve_config(model_type, checkpoint)
    read = None if checkpoint is None else (lambda: load_sam2_state_dict(checkpoint, config=config))
    return materialize(lambda: sam2_from_config(config), read, checkpoint=checkpoint, device=device,
                       dtype=dtype, seed=seed)


def sam2_from_config(config: Sam2Config) -> Sam2:
    """A randomly initialised (PyTorch default init) float32 SAM 2 for ``config``."""
    trunk = Hiera(
        embed_dim=config.embed_dim,
        num_heads=config.num_heads,
        stages=config.stages,
        global_att_blocks=config.global_att_blocks,
        window_pos_embed_bkg_spatial_size=config.window_pos_embed_bkg_spatial_size,
        window_spec=config.window_spec,
        mlp_ratio=config.mlp_ratio,
    )
    grid = config.image_embedding_size
    return Sam2(
        image_encoder=ImageEncoder(
            trunk=trunk,
            neck=FpnNeck(d_model=config.prompt_embed_dim, backbone_channel_list=trunk.channel_list[::-1]),
            img_size=config.image_size,
        ),
        prompt_encoder=Sam2PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=Sam2MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer.for_config(config),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            dynamic_multimask_via_stability=config.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=config.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=config.dynamic_multimask_stability_thresh,
        ),
        config=config,
    )


def _resolve_config(model_type: str | Sam2Config, checkpoint: str | os.PathLike | None) -> Sam2Config:
    if isinstance(model_type, Sam2Config):
        return model_type
    if model_type == "auto":
        config_path = None if checkpoint is None else resolve_checkpoint(checkpoint)[1]
        if config_path is None:
            raise ValueError(
                "model_type='auto' needs a Hugging Face SAM 2 folder or Hub id (its config.json names "
                f"the architecture); pass one of {sorted(SAM2_CONFIGS)} for a Meta .pt file"
            )
        return read_sam2_hf_config(config_path)
    if model_type not in SAM2_CONFIGS:
        raise ValueError(f"unknown SAM 2 model_type {model_type!r}; choose one of {sorted(SAM2_CONFIGS)}")
    return SAM2_CONFIGS[model_type]


def _registry_builder(name: str) -> Callable[..., Sam2]:
    def build(checkpoint: str | os.PathLike | None = None) -> Sam2:
        # as Meta's registry builders: float32 on the CPU; callers move it with .to(device)
        return build_sam2(name, checkpoint, device="cpu")

    build.__name__ = f"build_{name.replace('.', '_')}"
    build.__doc__ = f"Registry builder: SAM 2 {name} on the CPU, float32, optional checkpoint."
    return build


SAM2_REGISTRY: dict[str, Callable[..., Sam2]] = {
    name: _registry_builder(name) for name in SAM2_CONFIGS if name != "sam2_test"
}
