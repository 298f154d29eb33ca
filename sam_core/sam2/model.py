"""SAM 2 for single images: image encoder + prompt encoder + mask decoder, pre/post-processing.

The image path of Meta's sam2/modeling/sam2_base.py (Apache-2.0): ``forward_image`` plus the
``no_mem_embed`` that ``directly_add_no_mem_embed`` adds to the stride-16 features when there is no
memory (a single image). Nothing here touches the video memory modules, so a video predictor can be
built on top later. Same attributes as ``sam_core.Sam`` where the roles match (``image_encoder``,
``prompt_encoder``, ``mask_decoder``, ``preprocess``, ``postprocess_masks``, ``set_dtype``), so
``SamPredictor`` drives either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import PromptableModel
from .config import Sam2Config
from .mask_decoder import Sam2MaskDecoder
from .neck import ImageEncoder
from .prompt_encoder import Sam2PromptEncoder
from .transforms import ResizeSquare

__all__ = ["Sam2"]


class Sam2(PromptableModel):
    """Predicts object masks from an image and prompts (points, boxes, a low-res mask)."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    is_hq: bool = False  # no SAM-HQ token (the predictor asks every model)

    def __init__(
        self,
        *,
        image_encoder: ImageEncoder,
        prompt_encoder: Sam2PromptEncoder,
        mask_decoder: Sam2MaskDecoder,
        config: Sam2Config,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.config = config
        self.mask_threshold = config.mask_threshold
        # Added to the stride-16 features of a frame without memory (every single image).
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, config.prompt_embed_dim))
        # Not in the state dict (Meta keeps them in the transform); always float32, 0..1 pixel units.
        self.register_buffer("pixel_mean", torch.empty(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.empty(3, 1, 1), persistent=False)
        self.reset_pixel_stats()

    def reset_pixel_stats(self) -> None:
        """(Re)write the pixel mean/std buffers, e.g. after ``to_empty``."""
        device = self.pixel_mean.device if self.pixel_mean.device.type != "meta" else None
        self.pixel_mean = torch.tensor(self.config.pixel_mean, device=device).view(-1, 1, 1)  # 3 x 1 x 1
        self.pixel_std = torch.tensor(self.config.pixel_std, device=device).view(-1, 1, 1)  # 3 x 1 x 1

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size

    def make_input_transform(self) -> ResizeSquare:
        """The resize ``SamPredictor`` applies to images and prompts for this model."""
        return ResizeSquare(self.image_size)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B x) 3 x S x S pixels in 0..255 -> ImageNet-normalised float32 (no padding: already square)."""
        size = self.image_size
        if tuple(x.shape[-2:]) != (size, size):
            raise ValueError(
                f"SAM 2 expects {size} x {size} images (resize first), got {tuple(x.shape[-2:])}"
            )
        return (x.float() / 255.0 - self.pixel_mean) / self.pixel_std

    @torch.no_grad()
    def encode_image(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """B x 3 x S x S normalised pixels -> (B x C x S/16 x S/16 embedding with ``no_mem_embed``,
        (B x C/8 x S/4 x S/4, B x C/4 x S/8 x S/8) high-resolution features already projected by the
        decoder's ``conv_s0`` / ``conv_s1``), in the model dtype."""
        decoder = self.mask_decoder
        s0, s1, embedding = self.image_encoder(x.to(self.dtype), (decoder.conv_s0, decoder.conv_s1))
        embedding = embedding + self.no_mem_embed.view(1, -1, 1, 1)
        return embedding, (s0, s1)

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Low-res logits B x M x m x m -> B x M x H x W float32 logits at the original size (bilinear,
        as Meta's SAM2Transforms). ``input_size`` is unused: SAM 2 does not pad."""
        size = tuple(int(v) for v in original_size)
        return F.interpolate(masks.float(), size, mode="bilinear", align_corners=False)
