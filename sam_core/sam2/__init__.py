"""SAM 2 (Hiera) image models in plain PyTorch: presets, loading, the model and its predictor.

``sam_core.build_sam("sam2.1_hiera_tiny", checkpoint)`` builds one; ``sam_core.SamPredictor`` and
``SAM2ImagePredictor`` (a drop-in for Meta's ``sam2.sam2_image_predictor``) both run it.
"""

from .build import SAM2_REGISTRY, build_sam2, sam2_from_config
from .checkpoint import load_sam2_state_dict
from .config import SAM2_CONFIGS, Sam2Config
from .mask_decoder import Sam2DecoderOutput
from .model import Sam2
from .predictor import SAM2ImagePredictor

__all__ = [
    "SAM2ImagePredictor",
    "SAM2_CONFIGS",
    "SAM2_REGISTRY",
    "Sam2",
    "Sam2Config",
    "Sam2DecoderOutput",
    "build_sam2",
    "load_sam2_state_dict",
    "sam2_from_config",
]
