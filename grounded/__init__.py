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
    "GroundingDinoDetector": "grounded.detectors.grounding_dino",
    "RawDetections": "grounded.detectors.grounding_dino",
    "select_detections": "grounded.detectors.scoring",
    "build_tiny_detector": "grounded.detectors.tiny",
    "ModelUnavailableError": "grounded.detectors.loading",
    "parse_prompt": "grounded.detectors.prompt",
    "load_image": "grounded.io.images",
    "ImageError": "grounded.io.images",
    "annotate": "grounded.io.annotate",
    "class_color": "grounded.io.annotate",
    "detection_labels": "grounded.io.annotate",
    "detections_to_dict": "grounded.io.export",
    "detections_from_dict": "grounded.io.export",
    "mask_to_rle": "grounded.io.export",
    "rle_to_mask": "grounded.io.export",
    "CocoBuilder": "grounded.io.export",
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

