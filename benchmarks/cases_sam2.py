"""SAM 2 image-encoder case: sam2.1_hiera_tiny's encoder (trunk + neck + conv_s0/s1 + no_mem_embed).

Reference: transformers' ``Sam2Model.get_image_embeddings`` loaded from the saved folder; ours:
``sam_core.build_sam("auto", folder)`` (HF key map), so both hold identical weights. Our SAM 1
ViT-B encoder (the existing ``sam_encoder`` weights) runs in the same case for scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks.cases_sam import _enc_ours, _native_low_precision, _pixels
from benchmarks.context import Context
from benchmarks.measure import measure
from benchmarks.weights import SAM2_DIR

__all__ = ["SAM2_ENCODER_VARIANTS", "compare_sam2_encoder"]

_LEVELS = ("stride4", "stride8", "stride16")


def _run(ctx: Context, name: str, encode: Callable[[torch.Tensor], list[torch.Tensor]], size: int) -> dict:
    x = _pixels(ctx, size)
    with torch.inference_mode():
        timing = measure(lambda: encode(x), warmup=ctx.warmup, repeats=ctx.repeats)
        levels = encode(x)
    ctx.save(f"sam2_encoder-{name}", {k: t.float() for k, t in zip(_LEVELS, levels, strict=True)})
    return {"timing": timing.as_dict()}


def _hf(dtype: torch.dtype) -> Callable[[Context, str], dict]:
    def run(ctx: Context, name: str) -> dict:
        from transformers import Sam2Model

        if dtype != torch.float32:
            _native_low_precision()
        folder = ctx.workdir / SAM2_DIR
        model = Sam2Model.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype).eval()
        size = model.config.vision_config.backbone_config.image_size[0]
        return _run(ctx, name, lambda x: model.get_image_embeddings(x.to(dtype)), size)

    return run


def _ours(dtype: torch.dtype) -> Callable[[Context, str], dict]:
    def run(ctx: Context, name: str) -> dict:
        if dtype != torch.float32:
            _native_low_precision()
        return _run_ours(ctx, name, dtype)

    return run


def _run_ours(ctx: Context, name: str, dtype: torch.dtype) -> dict:
    from sam_core import build_sam

    sam = build_sam("auto", ctx.workdir / SAM2_DIR, device="cpu", dtype=dtype)

    def encode(x: torch.Tensor) -> list[torch.Tensor]:
        embedding, (s0, s1) = sam.encode_image(x)
        return [s0, s1, embedding]

    return _run(ctx, name, encode, sam.image_size)


SAM2_ENCODER_VARIANTS: dict[str, Callable[[Context, str], dict]] = {
    "hf-sdpa": _hf(torch.float32),
    "hf-sdpa+malloc": _hf(torch.float32),  # same, with sam_core.allocator's setting (see worker)
    "ours-fp32": _ours(torch.float32),
    "hf-sdpa-bf16": _hf(torch.bfloat16),  # only where the CPU computes bf16 natively
    "ours-bf16": _ours(torch.bfloat16),
    "ours-sam1-vit_b": _enc_ours(),  # our SAM 1 encoder (ViT-B at full size), for scale
}


def compare_sam2_encoder(ctx: Context, reference: str = "hf-sdpa") -> dict[str, dict[str, float]]:
    """Max |variant - ref| / max |ref| per feature level, vs the (fp32) reference."""
    ref = ctx.load(f"sam2_encoder-{reference}")
    out: dict[str, dict[str, float]] = {}
    for name in ("ours-fp32", "ours-bf16", "hf-sdpa-bf16"):
        got = ctx.load(f"sam2_encoder-{name}")
        if ref is not None and got is not None:
            out[name] = {
                f"max_rel_{k}": float((got[k] - ref[k]).abs().max() / ref[k].abs().max()) for k in _LEVELS
            }
    return out
