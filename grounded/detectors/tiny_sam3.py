"""An untrained, tiny SAM 3 (transformers' ``Sam3Model``) + CLIP tokenizer, built in-process for tests.

The real architecture (ViT with RoPE and windowed attention, FPN neck, CLIP text encoder, geometry
encoder, DETR encoder/decoder with presence token, mask head) at toy sizes: a 112 x 112 input, 20
queries, 32 x 32 mask logits. Random weights from a fixed seed; outputs mean nothing. It exists so
the ``detector: sam3`` path runs everywhere (API, HTTP, CLI, eval) with no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from grounded.detectors.sam3 import SAM3_TEXT_LENGTH, Sam3Detector

__all__ = ["TINY_SAM3", "build_tiny_sam3", "save_tiny_sam3", "tiny_sam3_config", "tiny_sam3_tokenizer"]

TINY_SAM3 = "tiny-random-sam3"


def tiny_sam3_tokenizer() -> Any:
    """A CLIP tokenizer with one token per byte (and per byte ending a word), no merges: any text works."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())  # 256 printable stand-ins for the bytes
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab.update({symbol + "</w>": len(symbols) + index for index, symbol in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_sam3_config(vocab_size: int = 514) -> Any:
    """``Sam3Config`` at toy sizes (hidden 32, 2 ViT layers, 112 px input, 20 queries)."""
    from transformers import Sam3Config

    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model", "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 112, "patch_size": 14,
                "window_size": 4, "global_attn_indexes": [1], "pretrain_image_size": 56,
            },
            "fpn_hidden_size": 32,
            "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
        },
        text_config={
            "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "projection_dim": 32, "max_position_embeddings": SAM3_TEXT_LENGTH,
            "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1,
        },
        geometry_encoder_config={"hidden_size": 32, "num_layers": 1, "num_attention_heads": 2,
                                 "intermediate_size": 64, "roi_size": 3},
        detr_encoder_config={"hidden_size": 32, "num_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 64},
        detr_decoder_config={"hidden_size": 32, "num_layers": 2, "num_queries": 20, "num_attention_heads": 2,
                             "intermediate_size": 64},
        mask_decoder_config={"hidden_size": 32, "num_attention_heads": 2},
    )


def tiny_sam3_model(seed: int = 0) -> Any:
    """A random tiny ``Sam3Model``; the same seed gives the same weights (the caller's RNG is untouched)."""
    from transformers import Sam3Model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Sam3Model(tiny_sam3_config()).eval()
        with torch.no_grad():
            # Test scaffolding: random init puts every query's score near 0.25 (two sigmoids of ~0);
            # wider query-text logits spread scores over (0, 1) so thresholds keep some and drop others.
            model.dot_product_scoring.text_proj.weight.mul_(6.0)
            model.dot_product_scoring.query_proj.weight.mul_(6.0)
            # Mask logits ~1e-4 would put every pixel at the 0.5 mask threshold, and near-zero box
            # offsets would give every query the same box: scale both up.
            model.mask_decoder.mask_embedder.layers[-1].weight.mul_(300.0)
            model.detr_decoder.box_head.layer3.weight.normal_(std=0.5)
    return model


def build_tiny_sam3(
    seed: int = 0, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Sam3Detector:
    """The tiny SAM 3 as a detector (``model_id`` says it is untrained)."""
    return Sam3Detector(
        tiny_sam3_model(seed), tiny_sam3_tokenizer(), model_id=f"{TINY_SAM3}-seed{seed} (untrained)",
        device=device, dtype=dtype, untrained=True,
    )


def save_tiny_sam3(folder: Path, seed: int = 0) -> Path:
    """What ``hf download facebook/sam3`` leaves (config.json with model_type sam3, safetensors,
    tokenizer), at toy size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiny_sam3_model(seed).save_pretrained(folder)
    tiny_sam3_tokenizer().save_pretrained(folder)
    return folder
