"""SAM cases: the ViT image encoder at full resolution, and the mask decoder with 1 / 8 / 32 boxes.

Reference: transformers' ``SamModel`` loaded from the saved folder; ours: ``sam_core.build_sam`` from
the same folder (HF key map), so both hold identical weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.context import Context, Skipped
from benchmarks.measure import measure
from benchmarks.peak import count_flops
from benchmarks.weights import SAM_DIR

__all__ = ["ENCODER_VARIANTS", "DECODER_VARIANTS", "DECODER_BOXES", "compare_encoder", "compare_decoder"]

DECODER_BOXES = (1, 8, 32)


def _pixels(ctx: Context, image_size: int) -> torch.Tensor:
    """1 x 3 x S x S normalised pixels, the same in every process."""
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(1, 3, image_size, image_size, generator=gen)


def _hf_model(ctx: Context, attn: str):
    from transformers import SamModel

    return SamModel.from_pretrained(ctx.workdir / SAM_DIR, attn_implementation=attn).eval()


def _ours(ctx: Context, **fast: Any):
    from sam_core import build_sam
    from sam_core.fast import enable_fast_path

    sam = build_sam("vit_b" if ctx.size == "full" else "auto", ctx.workdir / SAM_DIR, device="cpu")
    return enable_fast_path(sam, **fast) if fast else sam


def _native_low_precision() -> None:
    from benchmarks.measure import machine_info

    if not machine_info()["native_bf16"] and not torch.cuda.is_available():
        raise Skipped("CPU has no native bf16 (no AVX512_BF16 or AMX)")


# ---------------------------------------------------------------------------------------- encoder
def _encoder_run(
    ctx: Context, name: str, encode: Callable[[torch.Tensor], torch.Tensor], size: int, *, flops: bool = False
):
    x = _pixels(ctx, size)
    with torch.inference_mode():
        timing = measure(lambda: encode(x), warmup=ctx.warmup, repeats=ctx.repeats)
        embedding = encode(x).float()
    ctx.save(f"sam_encoder-{name}", {"embedding": embedding})
    result: dict[str, Any] = {"timing": timing.as_dict()}
    if flops:  # counted once per case, by ours-fp32 (benchmarks.efficiency)
        result["flops"] = count_flops(lambda: encode(x))
    return result


def _enc_hf(attn: str) -> Callable[[Context, str], dict]:
    def run(ctx: Context, name: str) -> dict:
        model = _hf_model(ctx, attn)
        size = model.config.vision_config.image_size
        return _encoder_run(ctx, name, lambda x: model.get_image_embeddings(x), size)

    return run


def _enc_ours(**fast: Any) -> Callable[[Context, str], dict]:
    def run(ctx: Context, name: str) -> dict:
        if fast.get("dtype") in (torch.bfloat16, torch.float16):
            _native_low_precision()
        sam = _ours(ctx, **fast)
        encode = lambda x: sam.image_encoder(x.to(sam.dtype))  # noqa: E731
        result = _encoder_run(ctx, name, encode, sam.image_size, flops=name == "ours-fp32")
        ran_in = "int8" if fast.get("quantize_int8") else str(sam.dtype).removeprefix("torch.")
        return {**result, "dtype": ran_in}

    return run


def _enc_auto(ctx: Context, name: str) -> dict:
    """The pipeline's default path: ``dtype="auto"`` (bf16 on CPUs with native bf16, else float32)
    and prepacked linears (``grounded.models.build_sam_model`` on CPU)."""
    from sam_core.device import resolve_dtype

    return _enc_ours(dtype=resolve_dtype("auto", "cpu"), prepack=True)(ctx, name)


def _enc_bf16_emulated(ctx: Context, name: str) -> dict:
    """Accuracy only: bf16-autocast numerics emulated in float32 (see benchmarks.bf16_emulation)."""
    from benchmarks.bf16_emulation import Bf16MatmulEmulation

    sam = _ours(ctx)
    x = _pixels(ctx, sam.image_size)
    with torch.inference_mode(), Bf16MatmulEmulation():
        embedding = sam.image_encoder(x)
    ctx.save(f"sam_encoder-{name}", {"embedding": embedding.float()})
    return {"accuracy_only": "bf16 matmul numerics emulated in float32; no timing"}


ENCODER_VARIANTS: dict[str, Callable[[Context, str], dict]] = {
    "hf-eager": _enc_hf("eager"),
    "hf-eager+malloc": _enc_hf("eager"),  # same, with sam_core.allocator's setting (see worker)
    "hf-sdpa": _enc_hf("sdpa"),
    "ours-fp32": _enc_ours(),
    "ours-auto": _enc_auto,
    "ours-int8": _enc_ours(quantize_int8=True),
    "ours-bf16": _enc_ours(dtype=torch.bfloat16),
    "ours-bf16-emulated": _enc_bf16_emulated,
    "ours-compile": _enc_ours(compile=True),
}


def compare_encoder(ctx: Context, reference: str = "hf-eager") -> dict[str, dict[str, float]]:
    """Cosine similarity and max abs difference of each variant's embedding vs the reference's and
    vs ours-fp32 (the issue's "fast mode vs fp32" figure)."""
    out: dict[str, dict[str, float]] = {}
    ref = ctx.load(f"sam_encoder-{reference}")
    fp32 = ctx.load("sam_encoder-ours-fp32")
    for name in ENCODER_VARIANTS:
        got = ctx.load(f"sam_encoder-{name}")
        if got is None:
            continue
        row = {}
        for label, base in (("vs_reference", ref), ("vs_ours_fp32", fp32)):
            if base is not None:
                row[f"cosine_{label}"] = _cosine(got["embedding"], base["embedding"])
                row[f"max_abs_{label}"] = float((got["embedding"] - base["embedding"]).abs().max())
        out[name] = row
    return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


# ---------------------------------------------------------------------------------------- decoder
def _boxes(n: int, image_size: int) -> torch.Tensor:
    """n x 4 xyxy boxes in the model's input frame, the same in every process."""
    gen = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=gen) * image_size * 0.7
    wh = 16 + torch.rand(n, 2, generator=gen) * image_size * 0.3
    return torch.cat([xy, xy + wh], dim=1)


def _embedding(channels: int, grid: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(99)
    return torch.randn(1, channels, grid, grid, generator=gen)


def _dec_hf(ctx: Context, name: str) -> dict:
    model = _hf_model(ctx, "sdpa")
    cfg = model.config
    emb = _embedding(cfg.vision_config.output_channels, cfg.prompt_encoder_config.image_embedding_size)

    def decode(boxes: torch.Tensor):
        out = model(image_embeddings=emb, input_boxes=boxes[None], multimask_output=False)
        return out.pred_masks[0, :, 0], out.iou_scores[0, :, 0]  # n x h x w, n

    return _decoder_runs(ctx, name, decode, cfg.vision_config.image_size)


def _dec_ours(ctx: Context, name: str) -> dict:
    from sam_core import ImageEmbedding, SamPredictor
    from sam_core.device import resolve_dtype

    sam = _ours(ctx)
    if name == "ours-auto":
        sam.set_dtype(resolve_dtype("auto", "cpu"))
    predictor = SamPredictor(sam)
    size = sam.image_size
    emb = _embedding(sam.prompt_encoder.embed_dim, sam.image_encoder.img_size // 16).to(sam.dtype)
    predictor.set_embedding(ImageEmbedding(features=emb, original_size=(size, size), input_size=(size, size)))

    def decode(boxes: torch.Tensor):
        scores, low_res = predictor.predict_low_res_torch(None, None, boxes=boxes, multimask_output=False)
        return low_res[:, 0], scores[:, 0]  # n x h x w, n

    result = _decoder_runs(ctx, name, decode, size)
    if name == "ours-fp32":  # FLOPs counted once per case (benchmarks.efficiency)
        result["boxes_32"]["flops"] = count_flops(lambda: decode(_boxes(32, size)))
    return {**result, "dtype": str(sam.dtype).removeprefix("torch.")}


def _decoder_runs(ctx: Context, name: str, decode: Callable, image_size: int) -> dict:
    result: dict[str, Any] = {}
    saved = {}
    with torch.inference_mode():
        for n in DECODER_BOXES:
            boxes = _boxes(n, image_size)
            timing = measure(lambda b=boxes: decode(b), warmup=ctx.warmup, repeats=ctx.repeats)
            masks, scores = decode(boxes)
            saved[f"masks_{n}"], saved[f"scores_{n}"] = masks.float(), scores.float()
            result[f"boxes_{n}"] = {"timing": timing.as_dict(), "per_box_ms": 1000 * timing.median_s / n}
    ctx.save(f"sam_decoder-{name}", saved)
    return result


DECODER_VARIANTS: dict[str, Callable[[Context, str], dict]] = {
    "hf-sdpa": _dec_hf,
    "ours-fp32": _dec_ours,
    "ours-auto": _dec_ours,  # dtype "auto": bf16 on CPUs with native bf16
}


def compare_decoder(ctx: Context, reference: str = "hf-sdpa") -> dict[str, dict[str, float]]:
    """Max abs difference of low-res mask logits and IoU scores vs the reference, per box count."""
    ref = ctx.load(f"sam_decoder-{reference}")
    out: dict[str, dict[str, float]] = {}
    for name in DECODER_VARIANTS:
        got = ctx.load(f"sam_decoder-{name}")
        if got is None or ref is None:
            continue
        out[name] = {f"max_abs_{key}": float((got[key] - ref[key]).abs().max()) for key in got if key in ref}
    return out
