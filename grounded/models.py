"""Build the detector and SAM that a ``PipelineConfig`` names, on one device, each in its dtype.

Precision rule for ``dtype: auto`` (figures: ``python -m benchmarks.precision``, README "Precision"):
``sam_core.device.resolve_dtype("auto", device)`` gives bf16 only where the hardware computes it
natively (CUDA with bf16; CPUs with AVX512_BF16 or AMX), float32 elsewhere. Each model then keeps that
bf16 only if ``AUTO_BF16`` says its accuracy in bf16 is good enough; otherwise it runs float32. An
explicit ``dtype: bfloat16``/``float16`` applies to both models. ``int8: true`` on a model's spec runs
it in float32 with dynamically quantised int8 linears (CPU only; opt-in, see the README for accuracy).
"""

from __future__ import annotations

import torch

from grounded.config import PipelineConfig
from grounded.detectors.base import OpenVocabularyDetector
from grounded.detectors.registry import BuildOptions
from grounded.detectors.registry import build_detector as _build_from_registry
from sam_core import Sam, build_sam
from sam_core.device import resolve_dtype
from sam_core.fast import enable_fast_path, quantize_encoder_int8

__all__ = ["AUTO_BF16", "build_detector", "build_sam_model", "model_dtypes"]

# Which models keep bf16 under dtype "auto" on bf16-native hardware (measured, see the module docstring).
AUTO_BF16: dict[str, bool] = {"detector": True, "sam": True}


def model_dtypes(config: PipelineConfig, device: torch.device) -> dict[str, torch.dtype]:
    """``{"detector": dtype, "sam": dtype}`` for ``config`` on ``device`` (the rule above)."""
    resolved = resolve_dtype(config.dtype, device)
    dtypes = {}
    for role, spec in (("detector", config.detector), ("sam", config.sam)):
        dtype = resolved
        if config.dtype == "auto" and not AUTO_BF16[role]:
            dtype = torch.float32
        if spec.int8:
            if config.dtype != "auto" and resolved != torch.float32:
                raise ValueError(
                    f"{role} int8 runs its linears in int8 with float32 activations; it cannot be combined "
                    f"with dtype {config.dtype!r}: set dtype to auto or float32, or int8 to false"
                )
            dtype = torch.float32
        dtypes[role] = dtype
    return dtypes


def build_detector(
    config: PipelineConfig, *, device: torch.device, dtype: torch.dtype
) -> OpenVocabularyDetector:
    """The detector ``config.detector`` names, through ``grounded.detectors.registry`` (any kind)."""
    return _build_from_registry(config.detector, BuildOptions(device=device, dtype=dtype, seed=config.seed))


def build_sam_model(config: PipelineConfig, *, device: torch.device, dtype: torch.dtype) -> Sam | None:
    """The SAM ``config.sam`` names; ``None`` for ``sam: none`` (the detector makes the masks)."""
    spec = config.sam
    if not spec.enabled:
        return None
    if spec.checkpoint is None and spec.model_type != "tiny":
        raise ValueError(
            f"SAM {spec.model_type!r} needs a checkpoint (Meta .pth, Hugging Face folder or Hub id); "
            "only the untrained 'tiny' architecture may be randomly initialised"
        )
    if spec.checkpoint is None:
        sam = build_sam("tiny", device=device, dtype=dtype, seed=config.seed)
    else:
        sam = build_sam(spec.model_type, spec.checkpoint, device=device, dtype=dtype)
    if spec.int8:
        return quantize_encoder_int8(sam)
    # CPU: prepacked encoder linears + fused GELU (sam_core.prepack; a no-op where oneDNN lacks them).
    return enable_fast_path(sam, prepack=sam.device.type == "cpu")
