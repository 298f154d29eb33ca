"""SAM 2 weights: Meta's ``.pt`` and the Hugging Face ``Sam2Model`` layout, mapped to ours.

Our names are Meta's except two prefixes (``sam_prompt_encoder.`` -> ``prompt_encoder.``,
``sam_mask_decoder.`` -> ``mask_decoder.``) and the two-way transformer's MLP (``mlp.layers.{0,1}``
-> ``mlp.lin1/lin2``, SAM 1's module). Meta's checkpoints also hold the video model; those tensors
are dropped by an explicit list of names below, and every image-path tensor is checked strictly
(``CheckpointError`` names missing, unexpected and mis-shaped keys). Files are read only with
safetensors or ``torch.load(weights_only=True)`` (``sam_core.checkpoint``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, _listing, _read_weights, resolve_checkpoint
from .config import Sam2Config
from .hf_config import read_sam2_hf_config

__all__ = [
    "load_sam2_state_dict",
    "meta_to_ours",
    "ours_to_meta",
    "hf_to_ours",
    "META_VIDEO_ONLY",
    "HF_VIDEO_ONLY",
]

# Meta SAM2Base tensors used only by the video predictor (memory attention/encoder, object pointers,
# temporal encodings). Prefixes end with "."; the others are exact names.
META_VIDEO_ONLY: tuple[str, ...] = (
    "memory_attention.",
    "memory_encoder.",
    "mask_downsample.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
)
# The same modules under transformers' names (Sam2Model's _keys_to_ignore_on_load_unexpected).
HF_VIDEO_ONLY: tuple[str, ...] = (
    "memory_attention.",
    "memory_encoder.",
    "mask_downsample.",
    "object_pointer_proj.",
    "temporal_positional_encoding_projection_layer.",
    "memory_temporal_positional_encoding",
    "no_memory_positional_encoding",
    "no_object_pointer",
    "occlusion_spatial_embedding_parameter",
)

_PREFIXES = (("sam_prompt_encoder.", "prompt_encoder."), ("sam_mask_decoder.", "mask_decoder."))
_TWO_WAY_MLP = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)(layers\.([01])|lin([12]))\.")


def _is_video_only(key: str, names: tuple[str, ...]) -> bool:
    return any(key.startswith(n) if n.endswith(".") else key == n for n in names)


def meta_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta SAM 2 keys -> ours, dropping the ``META_VIDEO_ONLY`` tensors."""
    out = {}
    for key, value in state.items():
        if _is_video_only(key, META_VIDEO_ONLY):
            continue
        for meta, ours in _PREFIXES:
            if key.startswith(meta):
                key = ours + key[len(meta) :]
        m = _TWO_WAY_MLP.match(key)
        if m and m.group(3) is not None:
            key = f"{m.group(1)}lin{int(m.group(3)) + 1}." + key[m.end() :]
        out[key] = value
    return out


def ours_to_meta(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> Meta's (the inverse of ``meta_to_ours`` on image-path tensors)."""
    out = {}
    for key, value in state.items():
        m = _TWO_WAY_MLP.match(key)
        if m and m.group(4) is not None:
            key = f"{m.group(1)}layers.{int(m.group(4)) - 1}." + key[m.end() :]
        for meta, ours in _PREFIXES:
            if key.startswith(ours):
                key = meta + key[len(ours) :]
        out[key] = value
    return out


# ------------------------------------------------------------------------------ Hugging Face layout
_P = r"(weight|bias)"


def _feed_forward(prefix_hf: str, prefix_ours: str, depth: int) -> list[tuple[str, str]]:
    """transformers' Sam2FeedForward (proj_in, layers.{k}, proj_out) -> Meta's MLP layers.{0..depth-1}."""
    return [
        (rf"{prefix_hf}\.proj_in\.{_P}", rf"{prefix_ours}.layers.0.\1"),
        (rf"{prefix_hf}\.proj_out\.{_P}", rf"{prefix_ours}.layers.{depth - 1}.\1"),
    ] + [(rf"{prefix_hf}\.layers\.{k}\.{_P}", rf"{prefix_ours}.layers.{k + 1}.\1") for k in range(depth - 2)]


def _hf_rules(config: Sam2Config) -> list[tuple[re.Pattern[str], str]]:
    vb, tr = r"vision_encoder\.backbone", "image_encoder.trunk"
    md = r"mask_decoder"
    attn = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
    rules = [
        (rf"{vb}\.patch_embed\.projection\.{_P}", rf"{tr}.patch_embed.proj.\1"),
        (rf"{vb}\.(pos_embed|pos_embed_window)", rf"{tr}.\1"),
        (rf"{vb}\.blocks\.(\d+)\.layer_norm([12])\.{_P}", rf"{tr}.blocks.\1.norm\2.\3"),
        (rf"{vb}\.blocks\.(\d+)\.attn\.(qkv|proj)\.{_P}", rf"{tr}.blocks.\1.attn.\2.\3"),
        (rf"{vb}\.blocks\.(\d+)\.mlp\.proj_in\.{_P}", rf"{tr}.blocks.\1.mlp.layers.0.\2"),
        (rf"{vb}\.blocks\.(\d+)\.mlp\.proj_out\.{_P}", rf"{tr}.blocks.\1.mlp.layers.1.\2"),
        (rf"{vb}\.blocks\.(\d+)\.proj\.{_P}", rf"{tr}.blocks.\1.proj.\2"),
        (rf"vision_encoder\.neck\.convs\.(\d+)\.{_P}", r"image_encoder.neck.convs.\1.conv.\2"),
        (r"no_memory_embedding", "no_mem_embed"),
        (
            r"(shared_image_embedding|prompt_encoder\.shared_embedding)\.positional_embedding",
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        ),
        (rf"prompt_encoder\.mask_embed\.conv1\.{_P}", r"prompt_encoder.mask_downscaling.0.\1"),
        (rf"prompt_encoder\.mask_embed\.layer_norm1\.{_P}", r"prompt_encoder.mask_downscaling.1.\1"),
        (rf"prompt_encoder\.mask_embed\.conv2\.{_P}", r"prompt_encoder.mask_downscaling.3.\1"),
        (rf"prompt_encoder\.mask_embed\.layer_norm2\.{_P}", r"prompt_encoder.mask_downscaling.4.\1"),
        (rf"prompt_encoder\.mask_embed\.conv3\.{_P}", r"prompt_encoder.mask_downscaling.6.\1"),
        (r"prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
        (rf"{md}\.(iou_token|mask_tokens|obj_score_token)\.weight", r"mask_decoder.\1.weight"),
        (
            rf"{md}\.transformer\.layers\.(\d+)\.{attn}\.([qkv]_proj)\.{_P}",
            r"mask_decoder.transformer.layers.\1.\2.\3.\4",
        ),
        (
            rf"{md}\.transformer\.layers\.(\d+)\.{attn}\.o_proj\.{_P}",
            r"mask_decoder.transformer.layers.\1.\2.out_proj.\3",
        ),
        (
            rf"{md}\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.{_P}",
            r"mask_decoder.transformer.layers.\1.norm\2.\3",
        ),
        (
            rf"{md}\.transformer\.layers\.(\d+)\.mlp\.proj_in\.{_P}",
            r"mask_decoder.transformer.layers.\1.mlp.lin1.\2",
        ),
        (
            rf"{md}\.transformer\.layers\.(\d+)\.mlp\.proj_out\.{_P}",
            r"mask_decoder.transformer.layers.\1.mlp.lin2.\2",
        ),
        (
            rf"{md}\.transformer\.final_attn_token_to_image\.([qkv]_proj)\.{_P}",
            r"mask_decoder.transformer.final_attn_token_to_image.\1.\2",
        ),
        (
            rf"{md}\.transformer\.final_attn_token_to_image\.o_proj\.{_P}",
            r"mask_decoder.transformer.final_attn_token_to_image.out_proj.\1",
        ),
        (rf"{md}\.transformer\.layer_norm_final_attn\.{_P}", r"mask_decoder.transformer.norm_final_attn.\1"),
        (rf"{md}\.upscale_conv1\.{_P}", r"mask_decoder.output_upscaling.0.\1"),
        (rf"{md}\.upscale_layer_norm\.{_P}", r"mask_decoder.output_upscaling.1.\1"),
        (rf"{md}\.upscale_conv2\.{_P}", r"mask_decoder.output_upscaling.3.\1"),
        (rf"{md}\.(conv_s[01])\.{_P}", r"mask_decoder.\1.\2"),
    ]
    for i in range(config.num_multimask_outputs + 1):
        rules += _feed_forward(
            rf"{md}\.output_hypernetworks_mlps\.{i}", f"mask_decoder.output_hypernetworks_mlps.{i}", 3
        )
    rules += _feed_forward(
        rf"{md}\.iou_prediction_head", "mask_decoder.iou_prediction_head", config.iou_head_depth
    )
    rules += _feed_forward(rf"{md}\.pred_obj_score_head", "mask_decoder.pred_obj_score_head", 3)
    return [(re.compile(pattern + "$"), template) for pattern, template in rules]


def hf_to_ours(
    state: Mapping[str, torch.Tensor], config: Sam2Config, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """transformers Sam2Model keys -> ours; CheckpointError for unknown keys or differing copies."""
    rules = _hf_rules(config)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if _is_video_only(key, HF_VIDEO_ONLY):
            continue
        if key == "prompt_encoder.point_embed.weight":  # one 4 x C table -> four 1 x C embeddings
            for i, row in enumerate(value.split(1)):
                out[f"prompt_encoder.point_embeddings.{i}.weight"] = row
            continue
        for pattern, template in rules:
            m = pattern.match(key)
            if m:
                name = m.expand(template)
                if name in out and value.device.type != "meta" and not torch.equal(out[name], value):
                    raise CheckpointError(f"{source}: tensors mapped to {name} differ (e.g. {key})")
                out[name] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{source} (Hugging Face SAM 2 layout) has {_listing('unexpected', sorted(unknown))}"
        )
    return out


def load_sam2_state_dict(checkpoint: str | os.PathLike, *, config: Sam2Config) -> dict[str, torch.Tensor]:
    """Read a Meta ``.pt``, a Hugging Face Sam2Model folder or Hub id into our layout (CPU tensors).

    A config.json must describe the same architecture as ``config`` (CheckpointError listing the
    differing fields otherwise).
    """
    weights_path, config_path = resolve_checkpoint(checkpoint)
    if config_path is not None:
        found = read_sam2_hf_config(config_path)
        a, b = found.architecture(), config.architecture()
        diff = [f"{k}: config.json {a[k]!r} vs requested {b[k]!r}" for k in a if a[k] != b[k]]
        if diff:
            raise CheckpointError(
                f"{config_path} describes another SAM 2 than requested ({'; '.join(diff)}); "
                "pick the matching model_type, or 'auto' to follow config.json"
            )
    state = _read_weights(Path(weights_path))
    if any(k.startswith("vision_encoder.") for k in state):
        return hf_to_ours(state, config, source=os.fspath(weights_path))
    return meta_to_ours(state)
