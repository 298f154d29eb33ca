"""Build the detector and SAM that a ``PipelineConfig`` names, on one device and dtype."""

from __future__ import annotations

import torch

from grounded.config import PipelineConfig
from grounded.detectors.grounding_dino import GroundingDinoDetector
from grounded.detectors.tiny import build_tiny_detector
from sam_core import Sam, build_sam
from sam_core.device import resolve_dtype

__all__ = ["build_detector", "build_sam_model", "resolve_dtype"]  # resolve_dtype: sam_core's policy

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
