"""Segment Anything in plain PyTorch: a drop-in for Meta's ``segment_anything``.

``from sam_core import sam_model_registry, SamPredictor`` replaces the same names from
``segment_anything``; ``build_sam`` adds device/dtype/seed control and loads Meta ``.pth`` files,
Hugging Face SAM folders and Hub ids through one strict loader. Variants: MobileSAM ("vit_t") and
SAM-HQ ("hq_vit_b", "hq_vit_l", "hq_vit_h", "hq_vit_tiny"; ``predict(..., hq_token_only=...)``).
"""

from .build import (
    build_sam,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    build_sam_vit_t,
    sam_model_registry,
)
from .checkpoint import CheckpointError, load_sam_state_dict
from .config import SAM_CONFIGS, SamConfig, TinyViTConfig
from .device import resolve_device
from .predictor import ImageEmbedding, SamPredictor
from .sam import Sam
from .sam2 import SAM2_CONFIGS, Sam2, Sam2Config, SAM2ImagePredictor
from .transforms import ResizeLongestSide

__all__ = [
    "CheckpointError",
    "ImageEmbedding",
    "ResizeLongestSide",
    "SAM2ImagePredictor",
    "SAM2_CONFIGS",
    "SAM_CONFIGS",
    "Sam",
    "SamConfig",
    "SamPredictor",
    "Sam2",
    "Sam2Config",
    "TinyViTConfig",
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "load_sam_state_dict",
    "resolve_device",
    "sam_model_registry",
]
