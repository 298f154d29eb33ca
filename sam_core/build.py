"""Build a SAM from a config (preset name or SamConfig), optionally loading weights.

``sam_model_registry`` and ``build_sam_vit_b/l/h`` mirror Meta's segment_anything/build_sam.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .checkpoint import load_sam_state_dict, read_checkpoint_config
from .config import SAM_CONFIGS, SamConfig
from .hq_decoder import MaskDecoderHQ
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .materialize import materialize
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .sam2.build import SAM2_REGISTRY, build_sam2, is_sam2_model_type
from .sam2.config import Sam2Config
from .sam2.model import Sam2
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = [
    "build_sam",
    "sam_model_registry",
    "build_sam_vit_b",
    "build_sam_vit_l",
    "build_sam_vit_h",
    "build_sam_vit_t",
    "sam_from_config",
]

_ALIASES = {"default": "vit_h"}  # Meta's registry: "default" is ViT-H


def build_sam(
    model_type: str | SamConfig | Sam2Config = "default",
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    seed: int | None = None,
) -> Sam | Sam2:
    """A SAM in eval mode on ``device`` (None: cuda > mps > cpu) running in ``dtype``.

    ``dtype``: None -> float32; ``"auto"`` -> bf16 where the device computes it natively, else float32
    (``sam_core.device.resolve_dtype``).

    Args:
        model_type: a ``SAM_CONFIGS`` key ("vit_b", "vit_l", "vit_h", "tiny"; "default" = "vit_h";
            MobileSAM "vit_t"; SAM-HQ "hq_vit_b", "hq_vit_l", "hq_vit_h", "hq_vit_tiny"),
            a ``SamConfig``, or "auto" to take the architecture from a Hugging Face config.json.
        checkpoint: Meta's .pth (or .safetensors with Meta's keys; also MobileSAM's mobile_sam.pt and
            SysCV's sam_hq_vit_*.pth, which use the same layout), a Hugging Face SAM or SAM-HQ folder
            (config.json + model.safetensors) or a Hub id like "facebook/sam-vit-base"; None for random
            weights. Loading is strict (``CheckpointError`` names missing/unexpected/mis-shaped keys).
        seed: makes the random initialisation deterministic (without touching the global RNG).

    SAM 2 names ("sam2.1_hiera_tiny", ...), a ``Sam2Config`` or "auto" with a SAM 2 config.json
    build a ``Sam2`` through ``sam_core.sam2.build_sam2``.
    """
    if is_sam2_model_type(model_type, checkpoint):
        return build_sam2(model_type, checkpoint, device=device, dtype=dtype, seed=seed)
    config = _resolve_config(model_type, checkpoint)
    read = None if checkpoint is None else (lambda: load_sam_state_dict(checkpoint, config=config))
    return materialize(lambda: sam_from_config(config), read, checkpoint=checkpoint, device=device,
                       dtype=dtype, seed=seed)


def sam_from_config(config: SamConfig) -> Sam:
    """An uninitialised-by-checkpoint SAM (Meta's default init) for ``config``, float32."""
    grid = config.image_embedding_size
    if config.tiny_vit is not None:  # MobileSAM / light SAM-HQ
        image_encoder = TinyViT(
            config=config.tiny_vit, img_size=config.image_size, out_chans=config.prompt_embed_dim
        )
    else:
        image_encoder = ImageEncoderViT(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes,
        )
    # SAM-HQ: SAM's decoder + the HQ token and early-feature fusion
    decoder_extra = {"vit_dim": config.early_feature_dim} if config.hq else {}
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=(MaskDecoderHQ if config.hq else MaskDecoder)(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer.for_config(config),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            **decoder_extra,
        ),
        pixel_mean=config.pixel_mean,
        pixel_std=config.pixel_std,
        config=config,
    )


def _resolve_config(model_type: str | SamConfig, checkpoint: str | os.PathLike | None) -> SamConfig:
    if isinstance(model_type, SamConfig):
        return model_type
    if not isinstance(model_type, str):
        raise ValueError(f"model_type must be a preset name or a SamConfig, got {type(model_type).__name__}")
    if model_type == "auto":
        found = None if checkpoint is None else read_checkpoint_config(checkpoint)
        if found is None:
            raise ValueError(
                "model_type='auto' needs a Hugging Face SAM folder or Hub id (its config.json "
                f"names the architecture); pass one of {sorted(SAM_CONFIGS)} for a bare weights file"
            )
        return found
    name = _ALIASES.get(model_type, model_type)
    if name not in SAM_CONFIGS:
        raise ValueError(
            f"unknown SAM model_type {model_type!r}; choose one of "
            f"{sorted(SAM_CONFIGS) + sorted(_ALIASES)}, 'auto', or pass a SamConfig"
        )
    return SAM_CONFIGS[name]


def _registry_builder(name: str) -> Callable[..., Sam]:
    def build(checkpoint: str | os.PathLike | None = None) -> Sam:
        # Meta's builders return a float32 model on the CPU; callers move it with .to(device).
        return build_sam(name, checkpoint, device="cpu")

    build.__name__ = f"build_sam_{name}"
    build.__doc__ = f"Meta-compatible builder: SAM {name} on the CPU, float32, optional checkpoint."
    return build


build_sam_vit_h = _registry_builder("vit_h")
build_sam_vit_l = _registry_builder("vit_l")
build_sam_vit_b = _registry_builder("vit_b")
build_sam_vit_t = _registry_builder("vit_t")  # MobileSAM

sam_model_registry: dict[str, Callable[..., Sam | Sam2]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    # MobileSAM (its own registry key) and SAM-HQ
    "vit_t": build_sam_vit_t,
    **{name: _registry_builder(name) for name in ("hq_vit_b", "hq_vit_l", "hq_vit_h", "hq_vit_tiny")},
    **SAM2_REGISTRY,  # "sam2.1_hiera_tiny", ..., "sam2_hiera_large"
}
