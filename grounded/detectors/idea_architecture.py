"""The architecture of an IDEA Grounding DINO checkpoint: read from its shapes, checked against IDEA's config.

IDEA's Swin-T (``groundingdino_swint_ogc.pth``) and Swin-B (``groundingdino_swinb_cogcoor.pth``) differ in
the Swin embed dim, depths, heads and window size; all of it is in the tensors' shapes. An IDEA Python
config file (``GroundingDINO_SwinT_OGC.py``) is read without executing it (``ast.literal_eval`` of its
top-level assignments), supplies what shapes cannot tell (attention heads vs sampling points) and must
agree with the shapes on everything else.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "IdeaArchitecture",
    "IdeaFormatError",
    "architecture_from_state_dict",
    "read_idea_config",
    "transformers_config",
]


class IdeaFormatError(ValueError):
    """An IDEA checkpoint that does not match the layout (keys named) or the architecture (shapes)."""


@dataclass(frozen=True)
class IdeaArchitecture:
    """What differs between IDEA checkpoints (Swin-T vs Swin-B, layer counts, widths).

    Swin: ``embed_dim``, per-stage ``depths`` and ``num_heads``, ``window_size``, ``patch_size``,
    ``out_stages`` (IDEA's ``return_interm_indices``, 0-based). BERT: ``text_*``. Transformer:
    ``d_model``, layer counts, feed-forward widths, heads and sampling points, queries, levels.
    """

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    out_stages: tuple[int, ...] = (1, 2, 3)
    text_vocab_size: int = 30522
    text_hidden_size: int = 768
    text_layers: int = 12
    text_intermediate_size: int = 3072
    text_max_positions: int = 512
    text_type_vocab_size: int = 2
    d_model: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    attention_heads: int = 8
    encoder_points: int = 4
    decoder_points: int = 4
    num_queries: int = 900
    num_feature_levels: int = 4
    max_text_len: int = 256
    bbox_embed_share: bool = True
    position_temperature: int = 20


def architecture_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None
) -> IdeaArchitecture:
    """Read the architecture from an IDEA state dict's keys and shapes.

    Heads and sampling points cannot be told apart from shapes (only their product is stored); they
    come from ``config`` (:func:`read_idea_config`: ``nheads``, ``enc_n_points``, ``dec_n_points``) or
    IDEA's defaults (8 heads). Config values that shapes also determine must agree with them.
    """
    config = dict(config or {})

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise IdeaFormatError(f"IDEA checkpoint lacks {key!r}; is this a Grounding DINO checkpoint?")
        return tuple(state_dict[key].shape)

    def count(pattern: str) -> int:
        found = {int(m.group(1)) for k in state_dict if (m := re.fullmatch(pattern, k))}
        return max(found) + 1 if found else 0

    stages = count(r"backbone\.0\.layers\.(\d+)\.blocks\.0\.norm1\.weight")
    if stages == 0:
        raise IdeaFormatError(
            "no Swin stages (backbone.0.layers.N.blocks.M.*): not an IDEA Grounding DINO checkpoint"
        )
    depths = tuple(count(rf"backbone\.0\.layers\.{s}\.blocks\.(\d+)\.norm1\.weight") for s in range(stages))
    tables = [
        shape(f"backbone.0.layers.{s}.blocks.0.attn.relative_position_bias_table") for s in range(stages)
    ]
    window = (round(tables[0][0] ** 0.5) + 1) // 2  # table rows = (2w - 1)^2
    embed_dim, _, patch, _ = shape("backbone.0.patch_embed.proj.weight")
    d_model, text_hidden = shape("feat_map.weight")
    vocab, _ = shape("bert.embeddings.word_embeddings.weight")
    levels = shape("transformer.level_embed")[0]
    heads = int(config.get("nheads", 8))
    enc_weights = shape("transformer.encoder.layers.0.self_attn.attention_weights.weight")[0]
    dec_weights = shape("transformer.decoder.layers.0.cross_attn.attention_weights.weight")[0]
    decoder_layers = count(r"transformer\.decoder\.layers\.(\d+)\.norm1\.weight")
    box0 = (
        [state_dict[f"bbox_embed.0.layers.{j}.weight"] for j in range(3)]
        if "bbox_embed.0.layers.0.weight" in state_dict
        else []
    )
    share = all(
        _same(box0[j], state_dict.get(f"bbox_embed.{i}.layers.{j}.weight", box0[j]))
        for i in range(1, decoder_layers)
        for j in range(len(box0))
    )
    arch = IdeaArchitecture(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(t[1] for t in tables),
        window_size=window,
        patch_size=patch,
        out_stages=tuple(s for s in range(stages) if f"backbone.0.norm{s}.weight" in state_dict),
        text_vocab_size=vocab,
        text_hidden_size=text_hidden,
        text_layers=count(r"bert\.encoder\.layer\.(\d+)\.output\.dense\.weight"),
        text_intermediate_size=shape("bert.encoder.layer.0.intermediate.dense.weight")[0],
        text_max_positions=shape("bert.embeddings.position_embeddings.weight")[0],
        text_type_vocab_size=shape("bert.embeddings.token_type_embeddings.weight")[0],
        d_model=d_model,
        encoder_layers=count(r"transformer\.encoder\.layers\.(\d+)\.norm1\.weight"),
        decoder_layers=decoder_layers,
        encoder_ffn_dim=shape("transformer.encoder.layers.0.linear1.weight")[0],
        decoder_ffn_dim=shape("transformer.decoder.layers.0.linear1.weight")[0],
        attention_heads=heads,
        encoder_points=int(config.get("enc_n_points", enc_weights // (levels * heads))),
        decoder_points=int(config.get("dec_n_points", dec_weights // (levels * heads))),
        num_queries=shape("transformer.tgt_embed.weight")[0],
        num_feature_levels=levels,
        max_text_len=int(config.get("max_text_len", 256)),
        bbox_embed_share=share,
        position_temperature=int(config.get("pe_temperatureH", 20)),
    )
    _check_config(arch, config, enc_weights, dec_weights)
    return arch


def transformers_config(arch: IdeaArchitecture) -> Any:
    """The ``GroundingDinoConfig`` that builds the model ``arch`` describes."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=arch.embed_dim,
        depths=list(arch.depths),
        num_heads=list(arch.num_heads),
        window_size=arch.window_size,
        patch_size=arch.patch_size,
        image_size=384 if arch.window_size == 12 else 224,  # IDEA's swin_B_384_22k / swin_T_224_1k
        out_features=[f"stage{s + 1}" for s in arch.out_stages],
    )
    text = BertConfig(
        vocab_size=arch.text_vocab_size,
        hidden_size=arch.text_hidden_size,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=max(1, arch.text_hidden_size // 64),  # BERT's 64-wide heads
        intermediate_size=arch.text_intermediate_size,
        max_position_embeddings=arch.text_max_positions,
        type_vocab_size=arch.text_type_vocab_size,
    )
    return GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        use_timm_backbone=False,
        d_model=arch.d_model,
        encoder_layers=arch.encoder_layers,
        decoder_layers=arch.decoder_layers,
        encoder_ffn_dim=arch.encoder_ffn_dim,
        decoder_ffn_dim=arch.decoder_ffn_dim,
        encoder_attention_heads=arch.attention_heads,
        decoder_attention_heads=arch.attention_heads,
        encoder_n_points=arch.encoder_points,
        decoder_n_points=arch.decoder_points,
        num_queries=arch.num_queries,
        num_feature_levels=arch.num_feature_levels,
        max_text_len=arch.max_text_len,
        decoder_bbox_embed_share=arch.bbox_embed_share,
        positional_embedding_temperature=arch.position_temperature,
    )


def read_idea_config(path: str | Path) -> dict[str, Any]:
    """Top-level ``name = literal`` assignments of an IDEA Python config (e.g. GroundingDINO_SwinT_OGC.py).

    The file is parsed, never executed or imported: values go through ``ast.literal_eval``; assignments
    whose value is not a literal (calls, names) are skipped.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as error:
        raise IdeaFormatError(f"IDEA config {str(path)!r} is not valid Python: {error}") from None
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def _check_config(
    arch: IdeaArchitecture, config: Mapping[str, Any], enc_weights: int, dec_weights: int
) -> None:
    checks = {
        "enc_layers": arch.encoder_layers,
        "dec_layers": arch.decoder_layers,
        "hidden_dim": arch.d_model,
        "dim_feedforward": arch.encoder_ffn_dim,
        "num_queries": arch.num_queries,
        "num_feature_levels": arch.num_feature_levels,
        "dec_pred_bbox_embed_share": arch.bbox_embed_share,
        "return_interm_indices": list(arch.out_stages),
    }
    wrong = [
        f"{name}={config[name]!r} (checkpoint: {value!r})"
        for name, value in checks.items()
        if name in config and config[name] != value
    ]
    per_level = arch.num_feature_levels * arch.attention_heads
    if enc_weights != per_level * arch.encoder_points or dec_weights != per_level * arch.decoder_points:
        wrong.append(
            f"nheads x n_points does not match the attention weights ({enc_weights}, {dec_weights} rows "
            f"for {arch.num_feature_levels} levels)"
        )
    if config.get("two_stage_type", "standard") != "standard":
        wrong.append(f"two_stage_type={config['two_stage_type']!r} (only 'standard' is supported)")
    if wrong:
        raise IdeaFormatError(f"IDEA config does not match the checkpoint: {'; '.join(wrong)}")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal tensors (meta tensors, which hold no values, are equal only when they are the same object)."""
    if a is b:
        return True
    return a.device.type != "meta" and a.shape == b.shape and bool(torch.equal(a, b.to(a.device)))
