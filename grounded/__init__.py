"""grounded-sam: text prompt -> Grounding DINO boxes -> SAM masks, as supervision Detections."""

from grounded.annotate import annotate, class_color, detection_labels
from grounded.config import DetectorSpec, PipelineConfig, SamSpec, load_config
from grounded.detector import GroundingDinoDetector, RawDetections
from grounded.export import (
    CocoBuilder,
    detections_from_dict,
    detections_to_dict,
    mask_to_rle,
    rle_to_mask,
)
from grounded.images import ImageError, load_image
from grounded.labels import select_detections
from grounded.pipeline import GroundedSAM, PipelineStats
from grounded.prompt import parse_prompt
from grounded.tiny_detector import build_tiny_detector
from grounded.weights import ModelUnavailableError

__all__ = [
    "GroundedSAM",
    "PipelineStats",
    "PipelineConfig",
    "DetectorSpec",
    "SamSpec",
    "load_config",
    "GroundingDinoDetector",
    "RawDetections",
    "select_detections",
    "build_tiny_detector",
    "ModelUnavailableError",
    "parse_prompt",
    "load_image",
    "ImageError",
    "annotate",
    "class_color",
    "detection_labels",
    "detections_to_dict",
    "detections_from_dict",
    "mask_to_rle",
    "rle_to_mask",
    "CocoBuilder",
]
