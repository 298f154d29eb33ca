"""Tiny random detectors of every kind the registry builds, saved in their real on-disk layouts.

- a transformers MM-Grounding-DINO folder (``save_pretrained`` + tokenizer + preprocessor config);
- an IDEA-Research ``.pth`` (``{"model": {"module." + key: tensor}}`` in IDEA's key layout, written by
  the inverse key map) with an IDEA Python config file and a BERT tokenizer folder.

Both use the tiny WordPiece vocabulary of ``grounded.detectors.tiny`` and its toy sizes, so every test
runs in well under a second per image on CPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from grounded.detectors.idea_architecture import IdeaArchitecture
from grounded.detectors.idea_format import to_idea
from grounded.detectors.tiny import _tiny_config, _tiny_tokenizer

# The tiny detector's input size (256 px shortest edge, 427 longest).
PREPROCESSOR = {"size": {"shortest_edge": 256, "longest_edge": 427}}


def tiny_mm_config(*, share: bool = True):
    """``MMGroundingDinoConfig`` with the tiny Grounding DINO's sizes."""
    from transformers import MMGroundingDinoConfig

    tokenizer = _tiny_tokenizer()
    values = _tiny_config(len(tokenizer)).to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    values.update(decoder_bbox_embed_share=share, decoder_cls_embed_share=share)
    return MMGroundingDinoConfig(**values)


def tiny_mm_model(seed: int = 0, *, share: bool = True):
    """A random ``MMGroundingDinoForObjectDetection`` whose scores spread around the thresholds."""
    from transformers import MMGroundingDinoForObjectDetection

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MMGroundingDinoForObjectDetection(tiny_mm_config(share=share)).eval()
        with torch.no_grad():
            for head in model.class_embed:  # init -4.6 (prior 0.01): every score ~0.01 at random weights
                head.bias.fill_(-1.0)
            for box in model.bbox_embed:  # zero init: every box would be its anchor
                box.layers[-1].weight.normal_(std=0.05)
    return model


def save_tiny_mm(folder: Path, seed: int = 0) -> Path:
    """What ``hf download openmmlab-community/mm_grounding_dino_...`` leaves, at toy size."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_mm_model(seed).save_pretrained(folder)
    _tiny_tokenizer().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return folder


# BERT heads are not in the checkpoint's shapes; the IDEA loader assumes BERT's 64-wide heads.
TINY_IDEA_ARCH = IdeaArchitecture(
    embed_dim=8,
    depths=(1, 1, 1, 1),
    num_heads=(1, 1, 1, 1),
    window_size=4,
    patch_size=4,
    out_stages=(1, 2, 3),
    text_hidden_size=64,
    text_layers=1,
    text_intermediate_size=64,
    text_max_positions=32,
    d_model=32,
    encoder_layers=1,
    decoder_layers=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    attention_heads=2,
    encoder_points=2,
    decoder_points=2,
    num_queries=30,
    max_text_len=32,
)
TINY_IDEA_CONFIG = """# IDEA-style config at toy size (read with ast, never executed)
modelname = "groundingdino"
backbone = "swin_T_224_1k"
enc_layers = 1
dec_layers = 2
dim_feedforward = 64
hidden_dim = 32
nheads = 2
num_queries = 30
enc_n_points = 2
dec_n_points = 2
max_text_len = 32
two_stage_type = "standard"
dec_pred_bbox_embed_share = True
"""


@dataclass
class IdeaFiles:
    source: torch.nn.Module  # the transformers model the checkpoint was written from
    checkpoint: Path
    config_file: Path
    tokenizer: Path


def tiny_idea_source(seed: int = 0):
    """A random ``GroundingDinoForObjectDetection`` of ``TINY_IDEA_ARCH`` with spread-out scores."""
    from transformers import GroundingDinoForObjectDetection

    from grounded.detectors.idea_architecture import transformers_config

    tokenizer = _tiny_tokenizer()
    arch = dataclasses.replace(TINY_IDEA_ARCH, text_vocab_size=len(tokenizer))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(transformers_config(arch)).eval()
        with torch.no_grad():
            model.model.decoder.layer_norm.weight.fill_(0.2)  # logits ~N(0, 1) instead of ~N(0, 32)
            model.bbox_embed[0].layers[-1].weight.normal_(std=0.05)
    return model, arch, tokenizer


def write_idea_files(folder: Path, seed: int = 0, *, wrap: bool = True, prefix: str = "module.") -> IdeaFiles:
    """An IDEA ``.pth`` (``{"model": ...}`` with ``module.`` keys by default), its config and tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    model, arch, tokenizer = tiny_idea_source(seed)
    weights = {prefix + k: v.clone() for k, v in to_idea(model.state_dict(), arch).items()}
    checkpoint = folder / "groundingdino_tiny.pth"
    torch.save({"model": weights} if wrap else weights, checkpoint)
    config_file = folder / "GroundingDINO_tiny.py"
    config_file.write_text(TINY_IDEA_CONFIG)
    tokenizer.save_pretrained(folder / "bert")
    return IdeaFiles(model, checkpoint, config_file, folder / "bert")


def warm_hub_cache(root: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """What ``hf download REPO_ID`` leaves in the Hub cache at ``root`` (one snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
