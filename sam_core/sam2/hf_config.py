"""transformers' Sam2Config (config.json, ``model_type: "sam2"``) -> our Sam2Config, no transformers import.

Only the values Meta's image models use are accepted; anything else is refused by field name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError
from .config import Sam2Config

__all__ = ["sam2_config_from_hf", "read_sam2_hf_config", "is_sam2_hf_config"]

# (sub-config, field, required value): the fixed parts of our architecture.
_FIXED: tuple[tuple[str, str, Any], ...] = (
    ("backbone", "patch_kernel_size", [7, 7]),
    ("backbone", "patch_stride", [4, 4]),
    ("backbone", "patch_padding", [3, 3]),
    ("backbone", "query_stride", [2, 2]),
    ("backbone", "num_query_pool_stages", 3),
    ("backbone", "num_channels", 3),
    ("backbone", "hidden_act", "gelu"),
    ("vision", "fpn_kernel_size", 1),
    ("vision", "fpn_stride", 1),
    ("vision", "fpn_padding", 0),
    ("vision", "fpn_top_down_levels", [2, 3]),
    ("vision", "num_feature_levels", 3),
    ("prompt", "patch_size", 16),
    ("prompt", "num_point_embeddings", 4),
    ("decoder", "attention_downsample_rate", 2),
)


def is_sam2_hf_config(raw: dict[str, Any]) -> bool:
    return raw.get("model_type") == "sam2"


def sam2_config_from_hf(raw: dict[str, Any]) -> Sam2Config:
    """A parsed config.json of a transformers Sam2Model -> Sam2Config (ValueError if unsupported)."""
    if not is_sam2_hf_config(raw):
        raise ValueError(f"model_type is {raw.get('model_type')!r}, not 'sam2'")
    vision = raw.get("vision_config") or {}
    subs = {
        "vision": vision,
        "backbone": vision.get("backbone_config") or {},
        "prompt": raw.get("prompt_encoder_config") or {},
        "decoder": raw.get("mask_decoder_config") or {},
    }
    wrong = [
        f"{sub}.{name} = {subs[sub][name]!r} (supported: {value!r})"
        for sub, name, value in _FIXED
        if name in subs[sub] and subs[sub][name] != value
    ]
    b, p, d = subs["backbone"], subs["prompt"], subs["decoder"]
    stages = b.get("blocks_per_stage", [1, 2, 7, 2])
    embed_dim, heads = b.get("hidden_size", 96), b.get("num_attention_heads", 1)
    dims = [embed_dim * 2**i for i in range(len(stages))]
    if b.get("embed_dim_per_stage", dims) != dims:
        wrong.append(f"embed_dim_per_stage {b['embed_dim_per_stage']} (supported: doubling, {dims})")
    if b.get("num_attention_heads_per_stage", [heads * 2**i for i in range(4)])[0] != heads:
        wrong.append("num_attention_heads_per_stage[0] must equal num_attention_heads")
    image_size = b.get("image_size", [1024, 1024])
    image_size = image_size[0] if isinstance(image_size, list) else image_size
    fpn = vision.get("fpn_hidden_size", 256)
    for sub, name in (("prompt", "hidden_size"), ("decoder", "hidden_size")):
        if subs[sub].get(name, 256) != fpn:
            wrong.append(f"{sub}.{name} must equal vision fpn_hidden_size {fpn}")
    if wrong:
        raise ValueError("unsupported SAM 2 config: " + "; ".join(wrong))
    return Sam2Config(
        embed_dim=embed_dim,
        num_heads=heads,
        stages=tuple(stages),
        global_att_blocks=tuple(b.get("global_attention_blocks", [5, 7, 9])),
        window_pos_embed_bkg_spatial_size=tuple(b.get("window_positional_embedding_background_size", [7, 7])),
        window_spec=tuple(b.get("window_size_per_stage", [8, 4, 14, 7])),
        image_size=int(image_size),
        mlp_ratio=float(b.get("mlp_ratio", 4.0)),
        prompt_embed_dim=fpn,
        mask_in_chans=p.get("mask_input_channels", 16),
        decoder_depth=d.get("num_hidden_layers", 2),
        decoder_num_heads=d.get("num_attention_heads", 8),
        decoder_mlp_dim=d.get("mlp_dim", 2048),
        num_multimask_outputs=d.get("num_multimask_outputs", 3),
        iou_head_depth=d.get("iou_head_depth", 3),
        iou_head_hidden_dim=d.get("iou_head_hidden_dim", 256),
        dynamic_multimask_via_stability=d.get("dynamic_multimask_via_stability", True),
        dynamic_multimask_stability_delta=d.get("dynamic_multimask_stability_delta", 0.05),
        dynamic_multimask_stability_thresh=d.get("dynamic_multimask_stability_thresh", 0.98),
    )


def read_raw_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err


def read_sam2_hf_config(path: Path) -> Sam2Config:
    """config.json -> Sam2Config; CheckpointError naming the file and the problem."""
    try:
        return sam2_config_from_hf(read_raw_config(path))
    except (ValueError, TypeError, KeyError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: {err}") from err
