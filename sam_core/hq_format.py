"""The Hugging Face SAM-HQ layout (transformers' ``SamHQModel``) in SysCV's terms.

``SamHQModel`` names SAM's parts as ``SamModel`` does (``hf_format.py``); this adds its HQ decoder
parts. SysCV's ``sam_hq_vit_*.pth`` use Meta's layout plus ``mask_decoder.hf_token`` etc., which is
what ``MaskDecoderHQ`` is built with, so they need no map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["HQ_RULES", "check_hq_decoder_config"]

_P = r"(weight|bias)"
# (HF regex, SysCV name template): anchored; tried after SamModel's rules.
HQ_RULES: list[tuple[str, str]] = [
    (r"mask_decoder\.hq_token\.weight", "mask_decoder.hf_token.weight"),
    # SamHQFeedForward proj_in / layers.0 / proj_out -> MLP layers.0 / 1 / 2
    (rf"mask_decoder\.hq_mask_mlp\.proj_in\.{_P}", r"mask_decoder.hf_mlp.layers.0.\1"),
    (rf"mask_decoder\.hq_mask_mlp\.layers\.0\.{_P}", r"mask_decoder.hf_mlp.layers.1.\1"),
    (rf"mask_decoder\.hq_mask_mlp\.proj_out\.{_P}", r"mask_decoder.hf_mlp.layers.2.\1"),
    # conv1 / norm / conv2 -> nn.Sequential indexes 0 / 1 / 3 (2 is the GELU)
    (rf"mask_decoder\.compress_vit_conv1\.{_P}", r"mask_decoder.compress_vit_feat.0.\1"),
    (rf"mask_decoder\.compress_vit_norm\.{_P}", r"mask_decoder.compress_vit_feat.1.\1"),
    (rf"mask_decoder\.compress_vit_conv2\.{_P}", r"mask_decoder.compress_vit_feat.3.\1"),
    (rf"mask_decoder\.encoder_conv1\.{_P}", r"mask_decoder.embedding_encoder.0.\1"),
    (rf"mask_decoder\.encoder_norm\.{_P}", r"mask_decoder.embedding_encoder.1.\1"),
    (rf"mask_decoder\.encoder_conv2\.{_P}", r"mask_decoder.embedding_encoder.3.\1"),
    (rf"mask_decoder\.mask_conv1\.{_P}", r"mask_decoder.embedding_maskfeature.0.\1"),
    (rf"mask_decoder\.mask_norm\.{_P}", r"mask_decoder.embedding_maskfeature.1.\1"),
    (rf"mask_decoder\.mask_conv2\.{_P}", r"mask_decoder.embedding_maskfeature.3.\1"),
]


def check_hq_decoder_config(vision: Mapping[str, Any], decoder: Mapping[str, Any]) -> None:
    """ValueError unless the HQ decoder fuses the ViT's own width (``vit_dim``), as SysCV builds it."""
    vit_dim = decoder.get("vit_dim", 1024)  # SamHQMaskDecoderConfig's default
    if vit_dim != vision["hidden_size"]:
        raise ValueError(
            f"config.json: mask_decoder_config.vit_dim={vit_dim!r} must equal vision_config.hidden_size="
            f"{vision['hidden_size']!r} (SAM-HQ fuses the ViT's early features)"
        )
