"""Shared fixtures: a tiny transformers ``SamModel`` with non-trivial random weights as the reference.

transformers is imported here (tests only) to check sam_core numerically against an independent
implementation on identical weights; sam_core itself never imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_core import SAM_CONFIGS, Sam, SamConfig, SamPredictor, build_sam

IMAGE_HW = (90, 120)  # non-square: exercises resize, padding and the crop in postprocessing

# tiny: 8 x 8 grid, window 4 (no padding); padded: window 3 -> the grid is padded to 9 x 9.
TEST_CONFIGS: dict[str, SamConfig] = {
    "tiny": SAM_CONFIGS["tiny"],
    "padded-windows": replace(
        SAM_CONFIGS["tiny"], window_size=3, encoder_depth=3, encoder_global_attn_indexes=(1,)
    ),
}


def hf_config_for(config: SamConfig):
    """The transformers ``SamConfig`` with the same architecture as ``config`` (eager attention)."""
    from transformers import SamConfig as HFSamConfig

    hf = HFSamConfig(
        vision_config={
            "hidden_size": config.encoder_embed_dim,
            "num_hidden_layers": config.encoder_depth,
            "num_attention_heads": config.encoder_num_heads,
            "image_size": config.image_size,
            "patch_size": config.patch_size,
            "window_size": config.window_size,
            "global_attn_indexes": list(config.encoder_global_attn_indexes),
            "output_channels": config.prompt_embed_dim,
            "num_pos_feats": config.prompt_embed_dim // 2,
            "mlp_dim": int(config.encoder_embed_dim * config.mlp_ratio),
        },
        prompt_encoder_config={
            "hidden_size": config.prompt_embed_dim,
            "image_size": config.image_size,
            "patch_size": config.patch_size,
            "mask_input_channels": config.mask_in_chans,
        },
        mask_decoder_config={
            "hidden_size": config.prompt_embed_dim,
            "mlp_dim": config.decoder_mlp_dim,
            "num_hidden_layers": config.decoder_depth,
            "num_attention_heads": config.decoder_num_heads,
            "num_multimask_outputs": config.num_multimask_outputs,
            "iou_head_depth": config.iou_head_depth,
            "iou_head_hidden_dim": config.iou_head_hidden_dim,
            # Meta's two-way transformer uses nn.LayerNorm's default eps (1e-5); HF's default is 1e-6.
            "layer_norm_eps": 1e-5,
        },
    )
    hf._attn_implementation = "eager"  # the plain softmax(QK^T)V reference, not SDPA
    return hf


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter non-trivial values (HF zero-initialises pos/rel-pos tables, biases, ...)."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen)
        if "positional_embedding" in name:  # random Fourier matrix, Meta's scale 1
            param.copy_(noise)
        elif "rel_pos" in name:
            param.copy_(0.5 * noise)
        elif "pos_embed" in name:
            param.copy_(0.2 * noise)
        elif name.endswith("bias"):
            param.copy_(0.1 * noise)
        elif "layer_norm" in name:
            param.copy_(1 + 0.1 * noise)
        elif param.ndim >= 2:
            param.copy_(noise / math.sqrt(param[0].numel()))
        else:
            param.copy_(noise)


@dataclass
class Reference:
    """A transformers SamModel and sam_core's Sam loaded from its save_pretrained folder."""

    config: SamConfig
    hf: torch.nn.Module
    folder: Path
    sam: Sam


_REFERENCES: dict[str, Reference] = {}


def _reference(name: str, root: Path) -> Reference:
    if name not in _REFERENCES:
        from transformers import SamModel

        config = TEST_CONFIGS[name]
        hf = SamModel(hf_config_for(config)).eval()
        assert type(hf.vision_encoder.layers[0].attn).__name__ == "SamVisionAttention"  # eager
        randomize_(hf, seed=list(TEST_CONFIGS).index(name))
        folder = root / name
        hf.save_pretrained(folder)
        sam = build_sam(config, folder, device="cpu")
        _REFERENCES[name] = Reference(config, hf, folder, sam)
    return _REFERENCES[name]


@pytest.fixture(scope="session")
def reference_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf_sam")


@pytest.fixture(scope="session", params=list(TEST_CONFIGS))
def reference(request: pytest.FixtureRequest, reference_root: Path) -> Reference:
    """Each test config in turn (parity tests run for both)."""
    return _reference(request.param, reference_root)


@pytest.fixture(scope="session")
def tiny(reference_root: Path) -> Reference:
    """The plain tiny config with HF-made random weights."""
    return _reference("tiny", reference_root)


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    """A 90 x 120 RGB uint8 image: smooth shapes plus noise, so masks have structure."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: IMAGE_HW[0], : IMAGE_HW[1]]
    disc = ((yy - 40) ** 2 + (xx - 70) ** 2 < 25**2)[..., None]
    base = np.where(disc, np.array([200, 60, 40]), np.array([30, 90, 160]))
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def predictor(tiny: Reference, image: np.ndarray) -> SamPredictor:
    pred = SamPredictor(tiny.sam)
    pred.set_image(image)
    return pred


# ------------------------------------------------------------------ SAM-HQ (transformers' SamHQModel)
HQ_TEST_CONFIGS: dict[str, SamConfig] = {name: replace(c, hq=True) for name, c in TEST_CONFIGS.items()}


def hf_hq_config_for(config: SamConfig):
    """transformers' ``SamHQConfig`` with the same architecture as ``config`` (eager attention)."""
    from transformers import SamHQConfig

    sam = hf_config_for(config)
    hf = SamHQConfig(
        vision_config=sam.vision_config.to_dict(),
        prompt_encoder_config=sam.prompt_encoder_config.to_dict(),
        mask_decoder_config={**sam.mask_decoder_config.to_dict(), "vit_dim": config.early_feature_dim},
    )
    hf._attn_implementation = "eager"
    return hf


def correct_samhq_upscaling_(hf: torch.nn.Module) -> None:
    """Make transformers' SamHQModel upscale the decoder transformer's output, as SysCV's model does.

    transformers 5.24's ``SamHQMaskDecoder.forward`` discards the transformer's image-token output
    and upscales its *input* embedding, spatially transposed (``image_embeddings.transpose(2, 3)``
    on a B x C x h x w tensor). SysCV's code (``segment_anything_hq``, which trained the released
    weights) and sam_core upscale the output; ``test_hq_parity_syscv.py`` checks that against
    SysCV's package. Test-only: the transformer's output is written (transposed) into the input
    tensor that the decoder reads next, so the rest of transformers' decoder runs unchanged.
    """
    transformer = hf.mask_decoder.transformer
    original = transformer.forward

    def forward(*args, image_embeddings: torch.Tensor, **kwargs):
        queries, keys = original(*args, image_embeddings=image_embeddings, **kwargs)  # keys: B x 1 x hw x C
        B, C, h, w = image_embeddings.shape
        image_embeddings.copy_(keys.reshape(B, h, w, C).permute(0, 3, 2, 1))  # read back transposed
        return queries, keys

    transformer.forward = forward


_HQ_REFERENCES: dict[str, Reference] = {}


@pytest.fixture(scope="session", params=list(HQ_TEST_CONFIGS))
def hq_reference(request: pytest.FixtureRequest, reference_root: Path) -> Reference:
    """A random-weight transformers SamHQModel and sam_core's SAM-HQ loaded from its folder."""
    name = request.param
    if name not in _HQ_REFERENCES:
        from transformers import SamHQModel

        config = HQ_TEST_CONFIGS[name]
        hf = SamHQModel(hf_hq_config_for(config)).eval()
        randomize_(hf, seed=10 + list(HQ_TEST_CONFIGS).index(name))
        correct_samhq_upscaling_(hf)
        folder = reference_root / f"hq-{name}"
        hf.save_pretrained(folder)
        _HQ_REFERENCES[name] = Reference(config, hf, folder, build_sam(config, folder, device="cpu"))
    return _HQ_REFERENCES[name]
