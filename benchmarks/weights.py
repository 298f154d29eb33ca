"""Random-weight models for the benchmark, saved once with ``save_pretrained`` so every variant loads
identical weights: transformers' ``SamModel`` (ViT-B) and ``GroundingDinoForObjectDetection``
(Swin-T + BERT-base, i.e. grounding-dino-tiny's architecture) with a locally generated BERT vocabulary;
``MMGroundingDinoForObjectDetection`` at the same size (MM-Grounding-DINO-T / LLMDet-T); and the
Grounding DINO weights again as an IDEA-Research ``.pth`` (IDEA's key layout, full size only).

``size="tiny"`` builds toy versions of the same architectures for the smoke test.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = [
    "SAM_DIR", "SAM2_DIR", "DINO_DIR", "MM_DINO_DIR", "IDEA_FILE", "prepare_weights", "dino_config",
    "sam_config", "sam2_config",
]

SAM_DIR = "hf_sam"
SAM2_DIR = "hf_sam2"
DINO_DIR = "hf_dino"
MM_DINO_DIR = "hf_mm_dino"
IDEA_FILE = "idea_groundingdino_swint.pth"
_BERT_VOCAB_SIZE = 30522


def sam_config(size: str):
    """transformers ``SamConfig``: library defaults (ViT-B) or a toy config for the smoke test.

    The mask decoder's LayerNorm eps is set to Meta's 1e-5 (transformers defaults to 1e-6), so the
    decoder comparison measures implementation differences, not an eps mismatch.
    """
    from transformers import SamConfig

    if size == "full":
        return SamConfig(mask_decoder_config={"layer_norm_eps": 1e-5})
    return SamConfig(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 128,
            "patch_size": 16,
            "window_size": 4,
            "global_attn_indexes": [1],
            "output_channels": 32,
            "num_pos_feats": 16,
            "mlp_dim": 128,
        },
        prompt_encoder_config={
            "hidden_size": 32,
            "image_size": 128,
            "patch_size": 16,
            "mask_input_channels": 16,
        },
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
            "layer_norm_eps": 1e-5,
        },
    )


def sam2_config(size: str):
    """transformers ``Sam2Config``: library defaults (= sam2.1-hiera-tiny) or a toy config."""
    from transformers import Sam2Config

    if size == "full":
        return Sam2Config()
    return Sam2Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "hidden_size": 16,
                "image_size": [128, 128],
                "blocks_per_stage": [1, 2, 2, 1],
                "embed_dim_per_stage": [16, 32, 64, 128],
                "num_attention_heads_per_stage": [1, 2, 4, 8],
                "window_size_per_stage": [4, 2, 4, 2],
                "global_attention_blocks": [4],
                "window_positional_embedding_background_size": [3, 3],
            },
            "backbone_channel_list": [128, 64, 32, 16],
            "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
            "fpn_hidden_size": 32,
        },
        prompt_encoder_config={"hidden_size": 32, "image_size": 128},
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
    )


def dino_config(size: str, vocab_size: int):
    """transformers ``GroundingDinoConfig``: library defaults (= grounding-dino-tiny) or a toy one."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    if size == "full":
        config = GroundingDinoConfig()
        if config.text_config.vocab_size != vocab_size:
            raise RuntimeError("GroundingDinoConfig's BERT vocabulary size changed; update the benchmark")
        return config
    return GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=16,
            depths=[1, 1, 2, 1],
            num_heads=[1, 1, 2, 2],
            window_size=4,
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=30,
        num_feature_levels=4,
    )


@torch.no_grad()
def _randomize_sam_(model: torch.nn.Module, seed: int) -> None:
    """SamConfig's initializer_range is 1e-10 (near-zero weights, near-zero embeddings): give every
    parameter a scale that keeps activations O(1), so accuracy comparisons mean something."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen)
        if "positional_embedding" in name:  # random Fourier matrix, Meta's scale 1
            param.copy_(noise)
        elif "rel_pos" in name or "pos_embed" in name:
            param.copy_(0.1 * noise)
        elif name.endswith("bias"):
            param.copy_(0.02 * noise)
        elif "layer_norm" in name or "norm" in (name.split(".")[-2] if "." in name else ""):
            param.copy_(1 + 0.1 * noise)
        elif param.ndim >= 2:
            param.copy_(noise / math.sqrt(param[0].numel()))
        else:
            param.copy_(noise)


@torch.no_grad()
def _randomize_dino_(model: torch.nn.Module, seed: int) -> None:
    """transformers initialises deformable-attention sampling offsets to a fixed grid and the box
    head's last layer to zero (boxes = proposals); small random weights make every query sample
    different points and predict its own box, as trained models do (and see the logit scale below)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():  # GroundingDino... and MMGroundingDino...
        if type(module).__name__.endswith("GroundingDinoMultiscaleDeformableAttention"):
            weight = module.sampling_offsets.weight
            weight.copy_(0.01 * torch.randn(weight.shape, generator=gen))
    last = model.bbox_embed[0].layers[-1].weight  # shared by every decoder layer and the encoder head
    last.copy_(0.05 * torch.randn(last.shape, generator=gen))
    # Random init gives token logits up to ~50: sigmoid scores saturate at exactly 1.0 in float32 and
    # the top boxes tie. A smaller decoder output norm gives logits of a few units, as trained models.
    model.model.decoder.layer_norm.weight.fill_(0.1)


def _bert_vocab(size: int) -> list[str]:
    """A WordPiece vocabulary with BERT-uncased's special-token ids, padded with unused tokens."""
    from grounded.detectors.tiny import tiny_vocab

    vocab = tiny_vocab()
    return vocab + [f"[unused{i}]" for i in range(len(vocab), size)]


def _save_tokenizer(folder: Path, size: int) -> None:
    from transformers import BertTokenizerFast

    vocab = {token: index for index, token in enumerate(_bert_vocab(size))}
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(folder)


def prepare_weights(workdir: Path, *, size: str = "full", seed: int = 0) -> dict[str, str]:
    """Build and save both models (and the tokenizer / processor configs) under ``workdir``."""
    from transformers import (
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        SamModel,
    )

    if size not in ("full", "tiny"):
        raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
    workdir = Path(workdir)
    torch.manual_seed(seed)
    sam = SamModel(sam_config(size)).eval()
    _randomize_sam_(sam, seed)
    sam.save_pretrained(workdir / SAM_DIR)
    del sam

    from transformers import Sam2Model

    sam2 = Sam2Model(sam2_config(size)).eval()
    _randomize_sam_(sam2, seed)
    with torch.no_grad():  # one random Fourier matrix (Sam2Model keeps two copies of Meta's one)
        sam2.prompt_encoder.shared_embedding.positional_embedding.copy_(
            sam2.shared_image_embedding.positional_embedding
        )
    sam2.save_pretrained(workdir / SAM2_DIR)
    del sam2

    dino_dir = workdir / DINO_DIR
    vocab_size = _BERT_VOCAB_SIZE if size == "full" else len(_bert_vocab(0))
    _save_tokenizer(dino_dir, vocab_size)
    dino = GroundingDinoForObjectDetection(dino_config(size, vocab_size)).eval()
    _randomize_dino_(dino, seed)
    dino.save_pretrained(dino_dir)
    edge = (
        {"shortest_edge": 800, "longest_edge": 1333}
        if size == "full"
        else {"shortest_edge": 128, "longest_edge": 213}
    )
    GroundingDinoImageProcessor(size=edge).save_pretrained(dino_dir)
    folders = {"sam": str(workdir / SAM_DIR), "sam2": str(workdir / SAM2_DIR), "dino": str(dino_dir)}
    if size == "full":  # the same weights in IDEA's layout; its BERT tokenizer is the one in dino_dir
        from grounded.detectors.idea_architecture import IdeaArchitecture
        from grounded.detectors.idea_format import to_idea

        torch.save({"model": to_idea(dino.state_dict(), IdeaArchitecture())}, workdir / IDEA_FILE)
        folders["idea"] = str(workdir / IDEA_FILE)
    del dino

    from transformers import MMGroundingDinoConfig, MMGroundingDinoForObjectDetection

    values = dino_config(size, vocab_size).to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    mm_dir = workdir / MM_DINO_DIR
    mm = MMGroundingDinoForObjectDetection(MMGroundingDinoConfig(**values)).eval()
    _randomize_dino_(mm, seed + 1)
    mm.save_pretrained(mm_dir)
    _save_tokenizer(mm_dir, vocab_size)
    GroundingDinoImageProcessor(size=edge).save_pretrained(mm_dir)
    folders["mm_dino"] = str(mm_dir)
    return folders
