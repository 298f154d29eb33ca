"""Grounding DINO case: one 800 x 1333 image, a 4-class prompt.

Reference: transformers' processor + ``GroundingDinoForObjectDetection`` + its post-processing, the
usual way to run the model. Ours: ``GroundingDinoDetector.detect`` (our preprocessing, the fast path,
per-class scores). Each variant also runs its model once on the reference's exact inputs so logits
and boxes can be compared model to model.

Other detectors of the registry: ``mm-*`` variants run MM-Grounding-DINO
(``MMGroundingDinoForObjectDetection``, compared with ``mm-hf-default``, timed against
``mm-hf-eager``); ``idea-ours-fp32`` loads the Grounding DINO weights from an IDEA-layout ``.pth``
(compared with the Grounding DINO reference: the same weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.context import Context, Skipped
from benchmarks.measure import machine_info, measure
from benchmarks.peak import count_flops
from benchmarks.weights import DINO_DIR, IDEA_FILE, MM_DINO_DIR

__all__ = ["CLASSES", "DINO_VARIANTS", "compare_dino", "dino_image"]

CLASSES = ["cat", "dog", "remote control", "person"]
_TOP_K = 20  # boxes compared in the detection-agreement figure


def dino_image(size: str, seed: int = 7) -> np.ndarray:
    """H x W x 3 uint8 at the detector's working size (800 x 1333 full), so no resize happens."""
    height, width = (800, 1333) if size == "full" else (128, 213)
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]  # blocky "objects"
    noise = rng.integers(0, 32, size=image.shape, dtype=np.uint8)
    return np.ascontiguousarray(image // 8 * 7 + noise)


@contextlib.contextmanager
def _topk_hook(record: list[torch.Tensor] | None = None, pinned: torch.Tensor | None = None):
    """Record the indices of ``torch.topk`` calls, or make the one with ``pinned``'s shape return them.

    Grounding DINO's two-stage query selection is a top-900 over ~22k proposal scores; proposals whose
    scores differ by ~1e-6 may swap query slots between two exact implementations, which changes
    those queries' outputs by O(1). Pinning the selection to the reference's makes the model-level
    comparison measure the implementations, not that discontinuity.
    """
    original = torch.topk

    def hooked(input, k, dim=-1, *args, **kwargs):
        if pinned is not None and k == pinned.shape[-1] and input.shape[:-1] == pinned.shape[:-1]:
            return torch.return_types.topk((input.gather(dim, pinned), pinned))
        out = original(input, k, dim, *args, **kwargs)
        if record is not None:
            record.append(out.indices)
        return out

    torch.topk = hooked
    try:
        yield
    finally:
        torch.topk = original


def _parity_outputs(ctx: Context, model: torch.nn.Module, family: str = "") -> dict[str, torch.Tensor]:
    """``model`` on the reference's exact inputs with the reference's query selection."""
    inputs = ctx.load(f"{family}dino-inputs")
    if inputs is None:
        return {}
    pinned = inputs.pop("topk_indices")
    with _topk_hook(pinned=pinned):
        outputs = model(**inputs)
    return {
        "logits": outputs.logits[0].float(),
        "pred_boxes": outputs.pred_boxes[0].float(),
        "encoder_vision": outputs.encoder_last_hidden_state_vision[0].float(),
    }


def _hf(attn: str | None, family: str = "") -> Callable[[Context, str], dict]:
    """attn "eager" forces eager attention everywhere (Swin and BERT too); None keeps transformers'
    defaults (Grounding DINO's own modules are eager-only; Swin and BERT pick SDPA). family "mm-":
    MM-Grounding-DINO."""

    def run(ctx: Context, name: str) -> dict:
        import transformers
        from PIL import Image
        from transformers import GroundingDinoProcessor

        folder = ctx.workdir / (MM_DINO_DIR if family else DINO_DIR)
        model_class = getattr(transformers, f"{'MM' if family else ''}GroundingDinoForObjectDetection")
        processor = GroundingDinoProcessor.from_pretrained(folder)
        extra = {} if attn is None else {"attn_implementation": attn}
        model = model_class.from_pretrained(folder, **extra).eval()
        image = dino_image(ctx.size)
        pil = Image.fromarray(image)
        caption = ". ".join(CLASSES) + "."
        height, width = image.shape[:2]

        def detect():
            inputs = processor(images=pil, text=caption, return_tensors="pt")
            outputs = model(**inputs)
            (result,) = processor.post_process_grounded_object_detection(
                outputs,
                inputs["input_ids"],
                threshold=0.0,
                text_threshold=0.0,
                target_sizes=[(height, width)],
            )
            return inputs, outputs, result

        with torch.inference_mode():
            timing = measure(detect, warmup=ctx.warmup, repeats=ctx.repeats)
            selected: list[torch.Tensor] = []
            with _topk_hook(record=selected):
                inputs, outputs, result = detect()
        if attn is None or ctx.load(f"{family}dino-inputs") is None:  # default attention is the reference
            ctx.save(f"{family}dino-inputs", dict(inputs, topk_indices=selected[0]))
        ctx.save(
            f"dino-{name}",
            {
                "logits": outputs.logits[0],
                "pred_boxes": outputs.pred_boxes[0],
                "encoder_vision": outputs.encoder_last_hidden_state_vision[0],
                "boxes": result["boxes"],
                "scores": result["scores"],
            },
        )
        return {"timing": timing.as_dict(), "input_size": list(inputs["pixel_values"].shape[-2:])}

    return run


def _load_ours(ctx: Context, family: str, options: dict[str, Any]) -> Any:
    """Our detector for ``family`` ("" Grounding DINO folder, "mm-" MM folder, "idea-" IDEA .pth)."""
    from grounded.detectors.grounding_dino import GroundingDinoDetector
    from grounded.detectors.idea_loading import load_idea_detector
    from grounded.detectors.mm_grounding_dino import MMGroundingDinoDetector

    if family == "idea-":
        if not (ctx.workdir / IDEA_FILE).is_file():
            raise Skipped("the IDEA-layout file is written for size=full only")
        return load_idea_detector(
            str(ctx.workdir / IDEA_FILE), tokenizer=str(ctx.workdir / DINO_DIR), device="cpu", **options
        )
    if family == "mm-":
        folder = str(ctx.workdir / MM_DINO_DIR)
        return MMGroundingDinoDetector.from_pretrained(folder, device="cpu", **options)
    return GroundingDinoDetector.from_pretrained(str(ctx.workdir / DINO_DIR), device="cpu", **options)


def _ours(family: str = "", **chosen: Any) -> Callable[[Context, str], dict]:
    def run(ctx: Context, name: str) -> dict:
        options = dict(chosen)
        if options.get("dtype") == "auto":  # the default path: bf16 on CPUs with native bf16
            from sam_core.device import resolve_dtype

            options["dtype"] = resolve_dtype("auto", "cpu")
        dtype = options.get("dtype")
        if dtype in (torch.bfloat16, torch.float16) and not (
            machine_info()["native_bf16"] or torch.cuda.is_available()
        ):
            raise Skipped("CPU has no native bf16 (no AVX512_BF16 or AMX)")
        detector = _load_ours(ctx, family, options)
        model = detector.model
        image = dino_image(ctx.size)
        from grounded.detectors.fast_path import clear_fast_path_caches

        with torch.inference_mode():
            # A cold backbone each run: the timed figure is a new image, not a cached one.
            timing = measure(
                lambda: (clear_fast_path_caches(model), detector.detect(image, CLASSES)),
                warmup=ctx.warmup,
                repeats=ctx.repeats,
            )
            cached = measure(lambda: detector.detect(image, CLASSES), warmup=0, repeats=ctx.repeats)
            raw = detector.detect(image, CLASSES)
            saved = {"boxes": torch.from_numpy(raw.boxes), "scores": torch.from_numpy(raw.box_scores)}
            saved.update(_parity_outputs(ctx, model, "mm-" if family == "mm-" else ""))
        ctx.save(f"dino-{name}", saved)
        ran_in = str(dtype or torch.float32).removeprefix("torch.")
        result: dict[str, Any] = {"timing": timing.as_dict(), "dtype": ran_in}
        if options.get("fast_path", True):
            result["same_image_timing"] = cached.as_dict()
        if name == "ours-fp32":  # FLOPs counted once per case (benchmarks.efficiency)
            cold = lambda: (clear_fast_path_caches(model), detector.detect(image, CLASSES))  # noqa: E731
            result["flops"] = count_flops(cold)
        return result

    return run


def _bf16_emulated(ctx: Context, name: str) -> dict:
    """Accuracy only: the fast path with bf16-autocast numerics emulated in float32."""
    from benchmarks.bf16_emulation import Bf16MatmulEmulation
    from grounded.detectors.grounding_dino import GroundingDinoDetector

    detector = GroundingDinoDetector.from_pretrained(str(ctx.workdir / DINO_DIR), device="cpu")
    with torch.inference_mode(), Bf16MatmulEmulation():
        raw = detector.detect(dino_image(ctx.size), CLASSES)
        saved = {"boxes": torch.from_numpy(raw.boxes), "scores": torch.from_numpy(raw.box_scores)}
        saved.update(_parity_outputs(ctx, detector.model))
    ctx.save(f"dino-{name}", saved)
    return {"accuracy_only": "bf16 matmul numerics emulated in float32; no timing"}


DINO_VARIANTS: dict[str, Callable[[Context, str], dict]] = {
    "hf-eager": _hf("eager"),
    "hf-eager+malloc": _hf("eager"),  # same, with sam_core.allocator's setting (see worker)
    "hf-default": _hf(None),
    "ours-plain": _ours(fast_path=False),
    "ours-fp32": _ours(),
    "ours-int8": _ours(quantize_int8=True),
    "ours-bf16": _ours(dtype=torch.bfloat16),
    "ours-auto": _ours(dtype="auto"),
    "ours-bf16-emulated": _bf16_emulated,
    "mm-hf-eager": _hf("eager", "mm-"),
    "mm-hf-default": _hf(None, "mm-"),
    "mm-ours-plain": _ours("mm-", fast_path=False),
    "mm-ours-fp32": _ours("mm-"),
    "idea-ours-fp32": _ours("idea-"),
}


def compare_dino(ctx: Context, reference: str | None = None) -> dict[str, dict[str, Any]]:
    """Per variant: model-level max |diff| of logits, boxes and encoder output on the reference's
    inputs and query selection (see ``_topk_hook``), and detection agreement of the top boxes of the
    full ``detect`` path (greedy IoU matching, score difference).

    The reference is hf-default when it ran: transformers' eager BERT adds Grounding DINO's boolean
    4D text mask to the attention logits (+1/+0) instead of masking, so hf-eager's text features are
    not the model's; our detector, like hf-default, runs BERT with SDPA, which masks.
    """
    reference = reference or ("hf-default" if ctx.load("dino-hf-default") is not None else "hf-eager")
    mm_reference = "mm-hf-default" if ctx.load("dino-mm-hf-default") is not None else "mm-hf-eager"
    out: dict[str, dict[str, Any]] = {}
    for name in DINO_VARIANTS:
        got = ctx.load(f"dino-{name}")
        against = mm_reference if name.startswith("mm-") else reference  # MM: other weights
        ref = ctx.load(f"dino-{against}")
        if got is None or ref is None:
            continue
        row: dict[str, Any] = {"reference": against}
        if "logits" in got and "logits" in ref:
            finite = torch.isfinite(ref["logits"])
            row["logits_max_abs"] = float((got["logits"][finite] - ref["logits"][finite]).abs().max())
            row["boxes_max_abs"] = float((got["pred_boxes"] - ref["pred_boxes"]).abs().max())
            row["encoder_max_abs"] = float((got["encoder_vision"] - ref["encoder_vision"]).abs().max())
            row["logit_scale"] = float(ref["logits"][finite].abs().max())
        row.update(_agreement(ref["boxes"], ref["scores"], got["boxes"], got["scores"]))
        out[name] = row
    return out


def _agreement(
    ref_boxes: torch.Tensor, ref_scores: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor
) -> dict[str, float]:
    """Greedy IoU matching of the reference's top-K boxes to ours' top-K."""
    k = min(_TOP_K, len(ref_scores), len(scores))
    ref_top = torch.argsort(ref_scores, descending=True)[:k]
    our_top = torch.argsort(scores, descending=True)[:k]
    iou = _iou(ref_boxes[ref_top].double(), boxes[our_top].double())  # k x k
    ious, score_diffs, used = [], [], set()
    for i in range(k):
        candidates = [(float(iou[i, j]), j) for j in range(k) if j not in used]
        best, j = max(candidates)
        used.add(j)
        ious.append(best)
        score_diffs.append(abs(float(ref_scores[ref_top[i]]) - float(scores[our_top[j]])))
    return {
        "top_k": float(k),
        "top_k_mean_iou": float(np.mean(ious)),
        "top_k_min_iou": float(np.min(ious)),
        "top_k_max_score_diff": float(np.max(score_diffs)),
    }


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: N x 4, b: M x 4 xyxy -> N x M IoU."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # N x M x 2
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # N x M x 2
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)  # N x M
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)  # N
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)  # M
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)
