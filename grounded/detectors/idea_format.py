"""IDEA's Grounding DINO checkpoint layout <-> transformers' ``GroundingDinoForObjectDetection``, key by key.

IDEA-Research/GroundingDINO saves ``{"model": state_dict}`` with its own module names (Swin ``qkv`` as
one matrix, ``nn.MultiheadAttention``'s packed ``in_proj``, ``transformer.*``, ``bert.*``, ...).
:func:`key_map` lists, for a given architecture, every IDEA key and the transformers key(s) it becomes
(a rename, or a split of a packed q/k/v matrix into three); :func:`to_transformers` and
:func:`to_idea` apply it in either direction, strictly: every key is mapped and nothing is left over.
The architecture comes from ``grounded.detectors.idea_architecture`` (read from the shapes).
"""

# Adapted from the key list in transformers' convert_grounding_dino_to_hf.py (Apache-2.0), rewritten as a
# bidirectional table for transformers 5's module names, with the heads and two-stage output it left out.

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from grounded.detectors.idea_architecture import IdeaArchitecture, IdeaFormatError

__all__ = ["IDEA_IGNORED", "TRANSFORMERS_ONLY", "key_map", "to_idea", "to_transformers"]

# IDEA keys that carry nothing transformers needs: BERT's unused pooler and position/type-id buffers
# (older transformers saved them), Swin's relative-position index (recomputed from the window size).
IDEA_IGNORED = re.compile(
    r"bert\.pooler\.dense\.(weight|bias)|bert\.embeddings\.(position_ids|token_type_ids)"
    r"|backbone\.0\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index"
)
# transformers keys with no IDEA counterpart: SwinModel's final norm, unused by the Swin backbone
# (transformers itself ignores it when missing); it keeps its initial values.
TRANSFORMERS_ONLY = re.compile(r"model\.backbone\.conv_encoder\.model\.swin\.layernorm\.(weight|bias)")

_SWIN = "model.backbone.conv_encoder.model"
_WB = ("weight", "bias")


def key_map(arch: IdeaArchitecture) -> list[tuple[str, tuple[str, ...]]]:
    """Every IDEA key of ``arch`` and the transformers key(s) it becomes.

    One target: a rename. Three targets: a packed q/k/v matrix (rows [q; k; v]) split into three.
    """
    rules: list[tuple[str, tuple[str, ...]]] = []

    def add(idea: str, hf: str, names: tuple[str, ...] = _WB) -> None:
        rules.extend((f"{idea}.{n}", (f"{hf}.{n}",)) for n in names)

    def qkv(idea: str, hf: str, q: str, k: str, v: str) -> None:
        rules.extend((f"{idea}{n}", tuple(f"{hf}.{p}.{n}" for p in (q, k, v))) for n in _WB)

    # Swin backbone
    add("backbone.0.patch_embed.proj", f"{_SWIN}.swin.embeddings.patch_embeddings.projection")
    add("backbone.0.patch_embed.norm", f"{_SWIN}.swin.embeddings.norm")
    for stage, depth in enumerate(arch.depths):
        for block in range(depth):
            src, dst = (
                f"backbone.0.layers.{stage}.blocks.{block}",
                f"{_SWIN}.swin.encoder.layers.{stage}.blocks.{block}",
            )
            add(f"{src}.norm1", f"{dst}.layernorm_before")
            add(f"{src}.norm2", f"{dst}.layernorm_after")
            rules.extend(
                (f"{src}.attn.qkv.{n}", tuple(f"{dst}.attention.{p}_proj.{n}" for p in "qkv")) for n in _WB
            )
            add(f"{src}.attn.proj", f"{dst}.attention.o_proj")
            add(f"{src}.attn", f"{dst}.attention.relative_position_bias", ("relative_position_bias_table",))
            add(f"{src}.mlp.fc1", f"{dst}.mlp.fc1")
            add(f"{src}.mlp.fc2", f"{dst}.mlp.fc2")
        if stage < len(arch.depths) - 1:
            add(
                f"backbone.0.layers.{stage}.downsample.reduction",
                f"{_SWIN}.swin.encoder.layers.{stage}.downsample.reduction",
                ("weight",),
            )
            add(
                f"backbone.0.layers.{stage}.downsample.norm",
                f"{_SWIN}.swin.encoder.layers.{stage}.downsample.norm",
            )
    for stage in arch.out_stages:  # IDEA's 0-based stage index; transformers names stages from 1
        add(f"backbone.0.norm{stage}", f"{_SWIN}.hidden_states_norms.stage{stage + 1}")
    for level in range(arch.num_feature_levels):  # conv, then GroupNorm
        add(f"input_proj.{level}.0", f"model.input_proj_vision.{level}.0")
        add(f"input_proj.{level}.1", f"model.input_proj_vision.{level}.1")

    # BERT text backbone and its projection
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        add(f"bert.embeddings.{name}", f"model.text_backbone.embeddings.{name}", ("weight",))
    add("bert.embeddings.LayerNorm", "model.text_backbone.embeddings.LayerNorm")
    for layer in range(arch.text_layers):
        prefix = f"encoder.layer.{layer}"
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ):
            add(f"bert.{prefix}.{part}", f"model.text_backbone.{prefix}.{part}")
    add("feat_map", "model.text_projection")

    # Encoder: deformable image layer, text enhancer, image<->text fusion
    for layer in range(arch.encoder_layers):
        src, dst = f"transformer.encoder.layers.{layer}", f"model.encoder.layers.{layer}.deformable_layer"
        for part in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            add(f"{src}.self_attn.{part}", f"{dst}.self_attn.{part}")
        for idea, hf in (
            ("norm1", "self_attn_layer_norm"),
            ("linear1", "fc1"),
            ("linear2", "fc2"),
            ("norm2", "final_layer_norm"),
        ):
            add(f"{src}.{idea}", f"{dst}.{hf}")
        src, dst = (
            f"transformer.encoder.text_layers.{layer}",
            f"model.encoder.layers.{layer}.text_enhancer_layer",
        )
        qkv(f"{src}.self_attn.in_proj_", f"{dst}.self_attn", "query", "key", "value")
        for idea, hf in (
            ("self_attn.out_proj", "self_attn.out_proj"),
            ("linear1", "fc1"),
            ("linear2", "fc2"),
            ("norm1", "layer_norm_before"),
            ("norm2", "layer_norm_after"),
        ):
            add(f"{src}.{idea}", f"{dst}.{hf}")
        src, dst = f"transformer.encoder.fusion_layers.{layer}", f"model.encoder.layers.{layer}.fusion_layer"
        rules += [(f"{src}.gamma_v", (f"{dst}.vision_param",)), (f"{src}.gamma_l", (f"{dst}.text_param",))]
        add(f"{src}.layer_norm_v", f"{dst}.layer_norm_vision")
        add(f"{src}.layer_norm_l", f"{dst}.layer_norm_text")
        for idea, hf in (
            ("v_proj", "vision_proj"),
            ("l_proj", "text_proj"),
            ("values_v_proj", "values_vision_proj"),
            ("values_l_proj", "values_text_proj"),
            ("out_v_proj", "out_vision_proj"),
            ("out_l_proj", "out_text_proj"),
        ):
            add(f"{src}.attn.{idea}", f"{dst}.attn.{hf}")

    # Decoder: self-attention, text cross-attention, deformable image cross-attention, feed-forward
    for layer in range(arch.decoder_layers):
        src, dst = f"transformer.decoder.layers.{layer}", f"model.decoder.layers.{layer}"
        for part in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            add(f"{src}.cross_attn.{part}", f"{dst}.encoder_attn.{part}")
        qkv(f"{src}.self_attn.in_proj_", f"{dst}.self_attn", "query", "key", "value")
        qkv(f"{src}.ca_text.in_proj_", f"{dst}.encoder_attn_text", "query", "key", "value")
        for idea, hf in (
            ("norm1", "encoder_attn_layer_norm"),
            ("ca_text.out_proj", "encoder_attn_text.out_proj"),
            ("catext_norm", "encoder_attn_text_layer_norm"),
            ("self_attn.out_proj", "self_attn.out_proj"),
            ("norm2", "self_attn_layer_norm"),
            ("linear1", "fc1"),
            ("linear2", "fc2"),
            ("norm3", "final_layer_norm"),
        ):
            add(f"{src}.{idea}", f"{dst}.{hf}")
    add("transformer.decoder.norm", "model.decoder.layer_norm")
    for j in range(2):
        add(
            f"transformer.decoder.ref_point_head.layers.{j}",
            f"model.decoder.reference_points_head.layers.{j}",
        )

    # Heads: per-decoder-layer box MLPs (held twice, top level and inside the decoder), two-stage output
    for layer in range(arch.decoder_layers):
        for j in range(3):
            add(f"bbox_embed.{layer}.layers.{j}", f"bbox_embed.{layer}.layers.{j}")
            add(
                f"transformer.decoder.bbox_embed.{layer}.layers.{j}",
                f"model.decoder.bbox_embed.{layer}.layers.{j}",
            )
    for j in range(3):
        add(f"transformer.enc_out_bbox_embed.layers.{j}", f"model.encoder_output_bbox_embed.layers.{j}")
    add("transformer.enc_output", "model.enc_output")
    add("transformer.enc_output_norm", "model.enc_output_norm")
    rules += [
        ("transformer.level_embed", ("model.level_embed",)),
        ("transformer.tgt_embed.weight", ("model.query_position_embeddings.weight",)),
    ]
    return rules


def to_transformers(
    state_dict: Mapping[str, torch.Tensor], arch: IdeaArchitecture
) -> dict[str, torch.Tensor]:
    """IDEA state dict -> transformers keys; :class:`IdeaFormatError` names missing/unexpected keys."""
    rules = key_map(arch)
    expected = {idea for idea, _ in rules}
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(k for k in state_dict if k not in expected and not IDEA_IGNORED.fullmatch(k))
    if missing or unexpected:
        raise IdeaFormatError(_listing("IDEA checkpoint", missing, unexpected))
    out: dict[str, torch.Tensor] = {}
    for idea, targets in rules:
        tensor = state_dict[idea]
        if len(targets) == 1:
            out[targets[0]] = tensor
            continue
        if tensor.shape[0] % 3:
            raise IdeaFormatError(f"{idea} has shape {tuple(tensor.shape)}; a packed q/k/v needs 3 x D rows")
        out.update(zip(targets, tensor.chunk(3, dim=0), strict=True))  # each (D x D) or (D,)
    return out


def to_idea(state_dict: Mapping[str, torch.Tensor], arch: IdeaArchitecture) -> dict[str, torch.Tensor]:
    """transformers state dict -> IDEA keys (the inverse of :func:`to_transformers`), strictly."""
    rules = key_map(arch)
    expected = {hf for _, targets in rules for hf in targets}
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(k for k in state_dict if k not in expected and not TRANSFORMERS_ONLY.fullmatch(k))
    if missing or unexpected:
        raise IdeaFormatError(_listing("transformers state dict", missing, unexpected))
    # q, k, v (each D x D, or D) stack back into one packed (3D x D, or 3D) tensor
    return {
        idea: torch.cat([state_dict[t] for t in targets]) if len(targets) > 1 else state_dict[targets[0]]
        for idea, targets in rules
    }


def _listing(what: str, missing: list[str], unexpected: list[str]) -> str:
    parts = []
    for kind, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
            parts.append(f"{len(keys)} {kind} key(s): {', '.join(keys[:8])}{more}")
    return f"{what} does not match Grounding DINO's layout: {'; '.join(parts)}"
