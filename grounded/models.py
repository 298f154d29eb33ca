"""Build the detector and SAM that a ``PipelineConfig`` names, on one device and dtype."""

from __future__ import annotations

import torch

from grounded.config import PipelineConfig
from grounded.detector import GroundingDinoDetector
from grounded.tiny_detector import build_tiny_detector
from sam_core import Sam, build_sam

__all__ = ["build_detector", "build_sam_model", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``float32``/``bfloat16``/``float16`` as given; ``auto`` is the fastest dtype that keeps accuracy.

    ``auto``: bfloat16 on CUDA with bf16 support and on CPUs with native bf16 matrix units
    (AVX512-BF16 / AMX), float32 elsewhere.
    """
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def build_detector(
    config: PipelineConfig, *, device: torch.device, dtype: torch.dtype
) -> GroundingDinoDetector:
    if config.detector.untrained:
        return build_tiny_detector(config.seed, device=device, dtype=dtype)
    return GroundingDinoDetector.from_pretrained(config.detector.model, device=device, dtype=dtype)


def build_sam_model(config: PipelineConfig, *, device: torch.device, dtype: torch.dtype) -> Sam:
    spec = config.sam
    if spec.checkpoint is None and spec.model_type != "tiny":
        raise ValueError(
            f"SAM {spec.model_type!r} needs a checkpoint (Meta .pth, Hugging Face folder or Hub id); "
            "only the untrained 'tiny' architecture may be randomly initialised"
        )
    if spec.checkpoint is None:
        return build_sam("tiny", device=device, dtype=dtype, seed=config.seed)
    return build_sam(spec.model_type, spec.checkpoint, device=device, dtype=dtype)
