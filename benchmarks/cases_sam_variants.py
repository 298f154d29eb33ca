"""MobileSAM ("vit_t") and SAM-HQ ("hq_vit_b") timings next to our ViT-B (``cases_sam``).

Speed only (random weights from a seed, no reference to compare against, nothing saved for the
accuracy table): encoder per image and decoder per 1 / 8 / 32 boxes, with the same inputs as
``cases_sam``. SAM-HQ's encoder time includes its per-image HQ features (early features compressed
and fused with the embedding), computed once per image and reused by every decode.
Targets: MobileSAM's encoder >= 10x faster than ViT-B's (same dtype); SAM-HQ encoder + decoder
within 15 % of plain SAM of the same size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from benchmarks.cases_sam import DECODER_BOXES, _boxes, _embedding, _pixels
from benchmarks.context import Context
from benchmarks.measure import measure

__all__ = ["VARIANT_ENCODERS", "VARIANT_DECODERS"]


def _build(ctx: Context, model_type: str):
    from sam_core import SAM_CONFIGS, TinyViTConfig, build_sam

    if ctx.size == "full":
        return build_sam(model_type, device="cpu", seed=0)
    # smoke-test sizes: the "tiny" SAM with a small TinyViT and/or the HQ decoder
    small = TinyViTConfig(embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
    config = replace(SAM_CONFIGS["tiny"], hq=model_type.startswith("hq_"))
    if model_type.endswith("vit_t") or model_type.endswith("tiny"):
        config = replace(config, tiny_vit=replace(small, window_sizes=(4, 4, 4, 4)))
    return build_sam(config, device="cpu", seed=0)


def _encoder(model_type: str) -> Callable[[Context, str], dict]:
    def run(ctx: Context, name: str) -> dict:
        sam = _build(ctx, model_type)
        x = _pixels(ctx, sam.image_size)

        def encode() -> None:
            if sam.is_hq:  # what SamPredictor does per image for SAM-HQ
                features, early = sam.image_encoder(x, return_early=True)
                sam.mask_decoder.hq_features(features, early)
            else:
                sam.image_encoder(x)

        with torch.inference_mode():
            timing = measure(encode, warmup=ctx.warmup, repeats=ctx.repeats)
        return {"timing": timing.as_dict(), "model_type": model_type}

    return run


def _decoder(model_type: str) -> Callable[[Context, str], dict]:
    def run(ctx: Context, name: str) -> dict:
        from sam_core import ImageEmbedding, SamPredictor

        sam = _build(ctx, model_type)
        size, grid = sam.image_size, sam.prompt_encoder.image_embedding_size[0]
        early = None
        if sam.is_hq:
            gen = torch.Generator().manual_seed(98)
            early = torch.randn(1, grid, grid, sam.config.early_feature_dim, generator=gen)
        predictor = SamPredictor(sam)
        emb = _embedding(sam.prompt_encoder.embed_dim, grid)
        predictor.set_embedding(ImageEmbedding(emb, (size, size), (size, size), early_features=early))
        result: dict[str, Any] = {"model_type": model_type}
        with torch.inference_mode():
            for n in DECODER_BOXES:
                boxes = _boxes(n, size)

                def decode(b: torch.Tensor = boxes) -> None:
                    predictor.predict_low_res_torch(None, None, boxes=b, multimask_output=False)

                timing = measure(decode, warmup=ctx.warmup, repeats=ctx.repeats)
                result[f"boxes_{n}"] = {"timing": timing.as_dict(), "per_box_ms": 1000 * timing.median_s / n}
        return result

    return run


VARIANT_ENCODERS: dict[str, Callable[[Context, str], dict]] = {
    "ours-vit_t-fp32": _encoder("vit_t"),
    "ours-hq_vit_b-fp32": _encoder("hq_vit_b"),
}
VARIANT_DECODERS: dict[str, Callable[[Context, str], dict]] = {
    "ours-vit_t-fp32": _decoder("vit_t"),
    "ours-hq_vit_b-fp32": _decoder("hq_vit_b"),
}
