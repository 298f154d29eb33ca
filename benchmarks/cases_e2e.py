"""End-to-end case: text -> masks through ``GroundedSAM`` with the real-size architectures.

Three timings, each a median over ``repeats`` calls after ``warmup``:
- cold: a new image every call (empty caches: detector, SAM encoder, SAM decoder all run);
- rethreshold: the same image with new box/text thresholds (no model should run);
- new prompt: the same image with another prompt (the detector runs; the SAM encoder must not).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.cases_dino import CLASSES, dino_image
from benchmarks.context import Context
from benchmarks.measure import Timing
from benchmarks.weights import DINO_DIR, SAM_DIR

__all__ = ["E2E_VARIANTS", "PROMPTS"]

# Distinct prompts for the "new prompt on a cached image" runs (one per call, so none is cached).
PROMPTS = [
    "cat. dog. remote control. person.",
    "car. bus. bicycle. traffic light.",
    "cup. bottle. bowl. spoon.",
    "chair. couch. bed. table.",
    "bird. horse. sheep. cow.",
    "book. clock. vase. scissors.",
    "apple. banana. orange. pizza.",
    "tv. laptop. mouse. keyboard.",
]


def _pipeline(ctx: Context, *, auto: bool = False, **detector_options: Any):
    """``auto``: each model in the dtype ``dtype: auto`` gives it (``grounded.models.model_dtypes``)."""
    from grounded.config import DetectorSpec, PipelineConfig, SamSpec
    from grounded.detectors.grounding_dino import GroundingDinoDetector
    from grounded.models import model_dtypes
    from grounded.pipeline import GroundedSAM
    from sam_core import build_sam
    from sam_core.fast import enable_fast_path

    dino_dir, sam_dir = ctx.workdir / DINO_DIR, ctx.workdir / SAM_DIR
    config = dataclasses.replace(
        PipelineConfig(),
        name="benchmark",
        detector=DetectorSpec(str(dino_dir)),
        sam=SamSpec("vit_b" if ctx.size == "full" else "tiny", str(sam_dir)),
        device="cpu",
        dtype="auto" if auto else "float32",
    )
    dtypes = model_dtypes(config, torch.device("cpu"))
    detector = GroundingDinoDetector.from_pretrained(
        str(dino_dir), device="cpu", dtype=dtypes["detector"], **detector_options
    )
    sam = build_sam("vit_b" if ctx.size == "full" else "auto", sam_dir, device="cpu", dtype=dtypes["sam"])
    if auto:  # as grounded.models.build_sam_model does on CPU
        enable_fast_path(sam, prepack=True)
    return GroundedSAM(detector, sam, config=config), dtypes


def _timed(calls: list[Callable[[], Any]], warmup: int) -> tuple[Timing, list[Any]]:
    """Run each call once, in order; time them all, report over the calls after ``warmup``.

    Only each result's ``len`` is kept (the detection count): holding every call's N x H x W masks
    (100 x 800 x 1333 bool = 107 MB per call) would add the benchmark's own memory to the peak RSS
    reported for the pipeline, which an application handling one image after another does not hold.
    """
    walls, cpus, results = [], [], []
    for call in calls:
        start_cpu, start = time.process_time(), time.perf_counter()
        result = call()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
        results.append(len(result))
        del result
    walls, cpus = walls[warmup:], cpus[warmup:]
    timing = Timing(
        median_s=statistics.median(walls),
        min_s=min(walls),
        max_s=max(walls),
        runs_s=tuple(walls),
        cpu_s=statistics.median(cpus),
    )
    return timing, results[warmup:]


def _e2e(*, auto: bool = False, **detector_options: Any) -> Callable[[Context, str], dict]:
    """``auto``: the default ``dtype: auto`` path, thresholds 0 so every cold call keeps
    ``max_detections`` (100) boxes -- the issue's "100 detections, cold" case."""

    def run(ctx: Context, name: str) -> dict:
        pipe, dtypes = _pipeline(ctx, auto=auto, **detector_options)
        n_calls = ctx.warmup + ctx.repeats
        images = [dino_image(ctx.size, seed=100 + i) for i in range(n_calls)]
        prompt = ". ".join(CLASSES)
        cold_options = {"box_threshold": 0.0, "text_threshold": 0.0} if auto else {}
        with torch.inference_mode():
            cold, cold_results = _timed(
                [lambda im=im: pipe.predict(im, prompt, **cold_options) for im in images], ctx.warmup
            )
            image = images[-1]
            thresholds = [(0.36 + 0.01 * i, 0.26 + 0.01 * i) for i in range(n_calls)]
            before = dataclasses.asdict(pipe.stats)
            rethreshold, _ = _timed(
                [
                    lambda b=b, t=t: pipe.predict(image, prompt, box_threshold=b, text_threshold=t)
                    for b, t in thresholds
                ],
                ctx.warmup,
            )
            after_threshold = dataclasses.asdict(pipe.stats)
            prompts = PROMPTS[1 : 1 + n_calls]
            new_prompt, prompt_results = _timed(
                [lambda p=p: pipe.predict(image, p) for p in prompts], ctx.warmup
            )
            after_prompt = dataclasses.asdict(pipe.stats)
        return {
            "cold": {"timing": cold.as_dict(), "detections": cold_results},
            "rethreshold": {
                "timing": rethreshold.as_dict(),
                "model_calls": {k: after_threshold[k] - before[k] for k in before},
            },
            "new_prompt": {
                "timing": new_prompt.as_dict(),
                "detections": prompt_results,
                "model_calls": {k: after_prompt[k] - after_threshold[k] for k in before},
            },
            "image_hw": list(images[0].shape[:2]),
            "dtypes": {role: str(d).removeprefix("torch.") for role, d in dtypes.items()},
            "calls_per_step": n_calls,
        }

    return run


E2E_VARIANTS: dict[str, Callable[[Context, str], dict]] = {
    "ours-fp32": _e2e(),
    "ours-auto": _e2e(auto=True),
    "ours-plain": _e2e(fast_path=False),
}
