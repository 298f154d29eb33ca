"""grounded-sam: text prompt -> Grounding DINO boxes -> SAM masks, as supervision Detections.

Names are imported lazily, so ``grounded-sam --help`` and light modules do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "GroundedSAM": "grounded.pipeline",
    "PipelineStats": "grounded.pipeline",
    "PipelineConfig": "grounded.config",
    "DetectorSpec": "grounded.config",
    "SamSpec": "grounded.config",
    "load_config": "grounded.config",
    "GroundingDinoDetector": "grounded.detector",
    "RawDetections": "grounded.detector",
    "select_detections": "grounded.labels",
    "build_tiny_detector": "grounded.tiny_detector",
    "ModelUnavailableError": "grounded.weights",
    "parse_prompt": "grounded.prompt",
    "load_image": "grounded.images",
    "ImageError": "grounded.images",
    "annotate": "grounded.annotate",
    "class_color": "grounded.annotate",
    "detection_labels": "grounded.annotate",
    "detections_to_dict": "grounded.export",
    "detections_from_dict": "grounded.export",
    "mask_to_rle": "grounded.export",
    "rle_to_mask": "grounded.export",
    "CocoBuilder": "grounded.export",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'grounded' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

