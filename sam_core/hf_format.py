"""The Hugging Face SAM layout (``SamModel``: config.json + model.safetensors) in Meta's terms.

``SamHQModel`` folders (model_type "sam_hq") load too: their HQ decoder parts map by ``hq_format.py``.

Two explicit maps, no transformers import: parameter names (HF -> Meta) and config.json -> SamConfig.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .config import SamConfig
from .hq_format import HQ_RULES, check_hq_decoder_config

__all__ = ["hf_key_to_meta", "is_hf_layout", "sam_config_from_hf", "HF_TIED_ALIASES"]

# SamModel ties prompt_encoder.shared_embedding to shared_image_embedding; save_pretrained keeps one.
HF_TIED_ALIASES = {
    "prompt_encoder.shared_embedding.positional_embedding": "shared_image_embedding.positional_embedding"
}

_P = r"(weight|bias)"  # parameter suffix
# (HF regex, Meta name template or function of (match, config)). Anchored; the first match wins.
_RULES: list[tuple[str, str | Callable[[re.Match[str], SamConfig], str]]] = [
    # image encoder
    (r"vision_encoder\.pos_embed", "image_encoder.pos_embed"),
    (rf"vision_encoder\.patch_embed\.projection\.{_P}", r"image_encoder.patch_embed.proj.\1"),
    (rf"vision_encoder\.layers\.(\d+)\.layer_norm([12])\.{_P}", r"image_encoder.blocks.\1.norm\2.\3"),
    (rf"vision_encoder\.layers\.(\d+)\.attn\.(qkv|proj)\.{_P}", r"image_encoder.blocks.\1.attn.\2.\3"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.(rel_pos_[hw])", r"image_encoder.blocks.\1.attn.\2"),
    (rf"vision_encoder\.layers\.(\d+)\.mlp\.(lin[12])\.{_P}", r"image_encoder.blocks.\1.mlp.\2.\3"),
    (r"vision_encoder\.neck\.conv1\.weight", "image_encoder.neck.0.weight"),
    (rf"vision_encoder\.neck\.layer_norm1\.{_P}", r"image_encoder.neck.1.\1"),
    (r"vision_encoder\.neck\.conv2\.weight", "image_encoder.neck.2.weight"),
    (rf"vision_encoder\.neck\.layer_norm2\.{_P}", r"image_encoder.neck.3.\1"),
    # prompt encoder
    (
        r"shared_image_embedding\.positional_embedding",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
    (
        r"prompt_encoder\.shared_embedding\.positional_embedding",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
    (r"prompt_encoder\.point_embed\.(\d+)\.weight", r"prompt_encoder.point_embeddings.\1.weight"),
    (r"prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
    (rf"prompt_encoder\.mask_embed\.conv1\.{_P}", r"prompt_encoder.mask_downscaling.0.\1"),
    (rf"prompt_encoder\.mask_embed\.layer_norm1\.{_P}", r"prompt_encoder.mask_downscaling.1.\1"),
    (rf"prompt_encoder\.mask_embed\.conv2\.{_P}", r"prompt_encoder.mask_downscaling.3.\1"),
    (rf"prompt_encoder\.mask_embed\.layer_norm2\.{_P}", r"prompt_encoder.mask_downscaling.4.\1"),
    (rf"prompt_encoder\.mask_embed\.conv3\.{_P}", r"prompt_encoder.mask_downscaling.6.\1"),
    # mask decoder
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight", r"mask_decoder.\1.weight"),
    (
        rf"mask_decoder\.transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
        rf"\.([qkv]_proj|out_proj)\.{_P}",
        r"mask_decoder.transformer.layers.\1.\2.\3.\4",
    ),
    (
        rf"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.{_P}",
        r"mask_decoder.transformer.layers.\1.norm\2.\3",
    ),
    (
        rf"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.(lin[12])\.{_P}",
        r"mask_decoder.transformer.layers.\1.mlp.\2.\3",
    ),
    (
        rf"mask_decoder\.transformer\.final_attn_token_to_image\.([qkv]_proj|out_proj)\.{_P}",
        r"mask_decoder.transformer.final_attn_token_to_image.\1.\2",
    ),
    (
        rf"mask_decoder\.transformer\.layer_norm_final_attn\.{_P}",
        r"mask_decoder.transformer.norm_final_attn.\1",
    ),
    (rf"mask_decoder\.upscale_conv1\.{_P}", r"mask_decoder.output_upscaling.0.\1"),
    (rf"mask_decoder\.upscale_layer_norm\.{_P}", r"mask_decoder.output_upscaling.1.\1"),
    (rf"mask_decoder\.upscale_conv2\.{_P}", r"mask_decoder.output_upscaling.3.\1"),
    # SamFeedForward: proj_in, layers.{j}, proj_out  ->  MLP layers.0, layers.{j+1}, layers.{last}
    (
        rf"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_in\.{_P}",
        r"mask_decoder.\1.layers.0.\2",
    ),
    (
        rf"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.(\d+)\.{_P}",
        lambda m, c: f"mask_decoder.{m[1]}.layers.{int(m[2]) + 1}.{m[3]}",
    ),
    (
        rf"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_out\.{_P}",
        lambda m, c: f"mask_decoder.{m[1]}.layers.{_mlp_depth(m[1], c) - 1}.{m[2]}",
    ),
]
_RULES += HQ_RULES
_COMPILED = [(re.compile(f"^{pattern}$"), target) for pattern, target in _RULES]


def _mlp_depth(name: str, config: SamConfig) -> int:
    return config.iou_head_depth if name == "iou_prediction_head" else 3  # hypernetwork MLPs have 3 layers


def hf_key_to_meta(key: str, config: SamConfig) -> str | None:
    """Meta's name for a Hugging Face ``SamModel`` parameter name; ``None`` if the name is unknown."""
    for pattern, target in _COMPILED:
        match = pattern.match(key)
        if match is not None:
            return match.expand(target) if isinstance(target, str) else target(match, config)
    return None


def is_hf_layout(keys: list[str]) -> bool:
    """Whether parameter names look like a Hugging Face ``SamModel`` (vs Meta's ``Sam``)."""
    return any(k.startswith(("vision_encoder.", "shared_image_embedding.")) for k in keys)


# SamVisionConfig / SamPromptEncoderConfig / SamMaskDecoderConfig defaults, used for absent fields.
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 1024,
    "patch_size": 16,
    "window_size": 14,
    "global_attn_indexes": [2, 5, 8, 11],
    "mlp_ratio": 4.0,
    "mlp_dim": None,
    "output_channels": 256,
    "num_pos_feats": 128,
    "num_channels": 3,
    "qkv_bias": True,
    "use_abs_pos": True,
    "use_rel_pos": True,
    "hidden_act": "gelu",
}
_PROMPT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "image_size": 1024,
    "patch_size": 16,
    "mask_input_channels": 16,
    "num_point_embeddings": 4,
    "hidden_act": "gelu",
}
_DECODER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "hidden_act": "relu",
    "mlp_dim": 2048,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "attention_downsample_rate": 2,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
}


def sam_config_from_hf(hf_config: Mapping[str, Any]) -> SamConfig:
    """SamConfig for a Hugging Face SAM or SAM-HQ ``config.json``; ValueError for variants we lack."""
    model_type = hf_config.get("model_type", "sam")
    if model_type not in ("sam", "sam_hq"):
        raise ValueError(f"config.json has model_type {model_type!r}; expected 'sam' or 'sam_hq'")
    v = {**_VISION_DEFAULTS, **(hf_config.get("vision_config") or {})}
    p = {**_PROMPT_DEFAULTS, **(hf_config.get("prompt_encoder_config") or {})}
    d = {**_DECODER_DEFAULTS, **(hf_config.get("mask_decoder_config") or {})}
    if model_type == "sam_hq":
        check_hq_decoder_config(v, d)
    mlp_dim = v["mlp_dim"] if v["mlp_dim"] is not None else int(v["hidden_size"] * v["mlp_ratio"])
    required = {
        "vision_config.num_channels": (v["num_channels"], 3),
        "vision_config.qkv_bias": (v["qkv_bias"], True),
        "vision_config.use_abs_pos": (v["use_abs_pos"], True),
        "vision_config.use_rel_pos": (v["use_rel_pos"], True),
        "vision_config.hidden_act": (v["hidden_act"], "gelu"),
        "vision_config.num_pos_feats": (v["num_pos_feats"], d["hidden_size"] // 2),
        "vision_config.output_channels": (v["output_channels"], d["hidden_size"]),
        "prompt_encoder_config.hidden_size": (p["hidden_size"], d["hidden_size"]),
        "prompt_encoder_config.image_size": (p["image_size"], v["image_size"]),
        "prompt_encoder_config.patch_size": (p["patch_size"], v["patch_size"]),
        "prompt_encoder_config.num_point_embeddings": (p["num_point_embeddings"], 4),
        "prompt_encoder_config.hidden_act": (p["hidden_act"], "gelu"),
        "mask_decoder_config.hidden_act": (d["hidden_act"], "relu"),
        "mask_decoder_config.attention_downsample_rate": (d["attention_downsample_rate"], 2),
    }
    unsupported = [f"{name}={got!r} (need {want!r})" for name, (got, want) in required.items() if got != want]
    if unsupported:
        raise ValueError(
            "config.json describes a SAM variant this implementation does not support: "
            + ", ".join(unsupported)
        )
    return SamConfig(
        encoder_embed_dim=v["hidden_size"],
        encoder_depth=v["num_hidden_layers"],
        encoder_num_heads=v["num_attention_heads"],
        encoder_global_attn_indexes=tuple(v["global_attn_indexes"]),
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        window_size=v["window_size"],
        mlp_ratio=mlp_dim / v["hidden_size"],
        prompt_embed_dim=d["hidden_size"],
        mask_in_chans=p["mask_input_channels"],
        decoder_depth=d["num_hidden_layers"],
        decoder_num_heads=d["num_attention_heads"],
        decoder_mlp_dim=d["mlp_dim"],
        num_multimask_outputs=d["num_multimask_outputs"],
        iou_head_depth=d["iou_head_depth"],
        iou_head_hidden_dim=d["iou_head_hidden_dim"],
        hq=model_type == "sam_hq",
    )
