"""The Segment Anything model: encoder + prompt encoder + decoder, with pre/post-processing.

Adapted from Meta's segment_anything/modeling/sam.py (Apache-2.0); same attributes and methods.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .common import PromptableModel
from .config import SamConfig
from .hq_decoder import MaskDecoderHQ
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT

__all__ = ["Sam"]


class Sam(PromptableModel):
    """Predicts object masks from an image and prompts (points, boxes, a low-res mask).

    The encoder is a ViT (SAM, SAM-HQ) or TinyViT (MobileSAM, light SAM-HQ); with a
    ``MaskDecoderHQ`` the model is a SAM-HQ (``is_hq``) and also uses the encoder's early features.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoderViT | TinyViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder | MaskDecoderHQ,
        pixel_mean: tuple[float, ...] | list[float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, ...] | list[float] = (58.395, 57.12, 57.375),
        *,
        config: SamConfig | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.config = config
        if config is not None:
            self.mask_threshold = config.mask_threshold
        self._pixel_stats = (tuple(float(v) for v in pixel_mean), tuple(float(v) for v in pixel_std))
        # Not in the state dict (as in Meta's checkpoints); always float32.
        self.register_buffer("pixel_mean", torch.empty(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.empty(3, 1, 1), persistent=False)
        self.reset_pixel_stats()

    def reset_pixel_stats(self) -> None:
        """(Re)write the pixel mean/std buffers, e.g. after ``to_empty``."""
        mean, std = self._pixel_stats
        device = self.pixel_mean.device if self.pixel_mean.device.type != "meta" else None
        self.pixel_mean = torch.tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)  # 3 x 1 x 1
        self.pixel_std = torch.tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)  # 3 x 1 x 1

    @property
    def is_hq(self) -> bool:
        """Whether the decoder has SAM-HQ's HQ token (and ``hq_token_only`` is meaningful)."""
        return isinstance(self.mask_decoder, MaskDecoderHQ)

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size

    @torch.no_grad()
    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool, hq_token_only: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """Meta's end-to-end call: a list of per-image dicts -> a list of per-image result dicts.

        Each input dict has ``image`` (3 x H x W, already resized with ``ResizeLongestSide``),
        ``original_size`` (H, W) and optionally ``point_coords`` (B x N x 2), ``point_labels`` (B x N),
        ``boxes`` (B x 4) and ``mask_inputs`` (B x 1 x 4h x 4w), all in the model's input frame.
        Each output dict has ``masks`` (B x M x H x W bool), ``iou_predictions`` (B x M) and
        ``low_res_logits`` (B x M x 4h x 4w), float32. SAM-HQ returns M = 1 (SysCV's behaviour)
        and takes ``hq_token_only``; a plain SAM refuses ``hq_token_only=True``.
        """
        check_hq_token_only(self, hq_token_only)
        input_images = torch.stack([self.preprocess(x["image"]) for x in batched_input], dim=0)
        early = None
        if self.is_hq:
            image_embeddings, early = self.image_encoder(input_images, return_early=True)  # N x C x h x w
        else:
            image_embeddings = self.image_encoder(input_images)  # N x C x h x w
        outputs = []
        for n, (record, embedding) in enumerate(zip(batched_input, image_embeddings, strict=True)):
            hq = {}
            if early is not None:
                hq = {
                    "hq_features": self.mask_decoder.hq_features(embedding[None], early[n : n + 1]),
                    "hq_token_only": hq_token_only,
                }
            points = (record["point_coords"], record["point_labels"]) if "point_coords" in record else None
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res_masks, iou_predictions = self.mask_decoder(
                image_embeddings=embedding.unsqueeze(0),
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                **hq,
            )
            masks = self.postprocess_masks(
                low_res_masks,
                input_size=tuple(record["image"].shape[-2:]),
                original_size=tuple(record["original_size"]),
            )
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou_predictions,
                    "low_res_logits": low_res_masks,
                }
            )
        return outputs

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Low-res logits -> logits at the original image size (bilinear, as Meta).

        masks: B x M x 4h x 4w; input_size: (h, w) of the resized image before padding;
        original_size: (H, W) of the original image. Returns B x M x H x W float32.
        """
        size = self.image_encoder.img_size
        low_h, low_w = masks.shape[-2:]
        if size % low_h or size % low_w:
            masks = F.interpolate(masks.float(), (size, size), mode="bilinear", align_corners=False)
        else:
            # Upsample only the low-res rows/columns the crop needs (+1 for the bilinear neighbour):
            # at the same integer scale every kept output pixel samples the same source points.
            sh, sw = size // low_h, size // low_w
            rows = min(low_h, -(-int(input_size[0]) // sh) + 1)
            cols = min(low_w, -(-int(input_size[1]) // sw) + 1)
            masks = F.interpolate(
                masks[..., :rows, :cols].float(), (rows * sh, cols * sw), mode="bilinear", align_corners=False
            )
        masks = masks[..., : input_size[0], : input_size[1]]  # drop the padding
        return F.interpolate(
            masks, tuple(int(v) for v in original_size), mode="bilinear", align_corners=False
        )

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """3 x h x w (or B x 3 x h x w) pixels in 0..255 -> normalised, zero-padded to S x S, float32."""
        x = (x.float() - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        size = self.image_encoder.img_size
        return F.pad(x, (0, size - w, 0, size - h))


def check_hq_token_only(sam: Sam, hq_token_only: bool) -> None:
    """ValueError when ``hq_token_only=True`` is asked of a model without SAM-HQ's HQ token."""
    if hq_token_only and not getattr(sam, "is_hq", False):
        raise ValueError(
            "hq_token_only=True needs a SAM-HQ model (model_type 'hq_vit_b', 'hq_vit_l', 'hq_vit_h' or "
            "'hq_vit_tiny'); this SAM has no HQ output token. Drop hq_token_only or load SAM-HQ weights."
        )
