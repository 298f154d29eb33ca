"""Image preprocessing for Grounding DINO in plain torch (no torchvision, no transformers image processor).

Reproduces transformers' ``GroundingDinoImageProcessorPil``: resize so the shortest edge is 800 px
unless that makes the longest edge exceed 1333 px (then the longest edge is ~1333), bilinear with
antialiasing, scale to [0, 1], normalise with the ImageNet mean/std, and pad a batch to a common size
at the bottom/right with a ``pixel_mask`` marking real pixels.

Tolerance: the reference resizes with PIL (uint8 in, uint8 out); we resize the uint8 tensor with
``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``, whose separable filter is PIL's.
Resized pixels differ from PIL's by at most 1 grey level (rounding), i.e. at most 1 / (255 * 0.225)
~= 0.0175 after normalisation, and on almost all pixels by 0. Sizes and ``pixel_mask`` are identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DetectorPreprocessor"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DetectorPreprocessor:
    """Resize + normalise + pad, as the released Grounding DINO checkpoints expect.

    Attributes:
        shortest_edge: target length of the shorter image side (800 for the released models).
        longest_edge: cap on the longer side after resizing (1333), keeping the aspect ratio.
        mean, std: per-channel RGB normalisation applied to pixels scaled to [0, 1].
    """

    shortest_edge: int = 800
    longest_edge: int = 1333
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not 1 <= self.shortest_edge <= self.longest_edge:
            raise ValueError(
                f"need 1 <= shortest_edge <= longest_edge, got {self.shortest_edge} and {self.longest_edge}"
            )

    @classmethod
    def from_config_dict(cls, config: Mapping[str, Any]) -> DetectorPreprocessor:
        """Read a model folder's ``preprocessor_config.json`` (``size``, ``image_mean``, ``image_std``)."""
        size = config.get("size") or {}
        mean = config.get("image_mean", IMAGENET_MEAN)
        std = config.get("image_std", IMAGENET_STD)
        return cls(
            shortest_edge=int(size.get("shortest_edge", 800)),
            longest_edge=int(size.get("longest_edge", 1333)),
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
        )

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after resizing an image of (height, width), as transformers computes it.

        Ported from ``transformers.image_transforms.get_size_with_aspect_ratio``; the only change is
        that each side is at least 1 px (extreme aspect ratios such as 1 x 5000 would round to 0).
        """
        size, max_size = self.shortest_edge, self.longest_edge
        short, long = float(min(height, width)), float(max(height, width))
        raw_size = None
        if long / short * size > max_size:
            raw_size = max_size * short / long
            size = int(round(raw_size))
        if (height <= width and height == size) or (width <= height and width == size):
            out_h, out_w = height, width
        elif width < height:
            out_w = size
            out_h = int((raw_size if raw_size is not None else size) * height / width)
        else:
            out_h = size
            out_w = int((raw_size if raw_size is not None else size) * width / height)
        return max(out_h, 1), max(out_w, 1)

    def __call__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocess one image or a batch.

        Args:
            images: an H x W x 3 uint8 RGB array, or a sequence of them (sizes may differ).
            device, dtype: where the outputs live; resizing runs on CPU in uint8 (as PIL does),
                normalisation on ``device``.

        Returns:
            pixel_values: B x 3 x H' x W' ``dtype``, normalised; images padded with 0 at the
                bottom/right to the batch's largest resized height and width.
            pixel_mask: B x H' x W' int64, 1 on real pixels and 0 on padding.
        """
        batch = [images] if isinstance(images, np.ndarray) else list(images)
        if not batch:
            raise ValueError("no images to preprocess")
        resized = [self._resize(_check_image(image)) for image in batch]  # each 3 x h x w uint8
        pad_h = max(r.shape[1] for r in resized)
        pad_w = max(r.shape[2] for r in resized)
        mean = torch.tensor(self.mean, device=device, dtype=torch.float32).view(3, 1, 1)  # 3 x 1 x 1
        std = torch.tensor(self.std, device=device, dtype=torch.float32).view(3, 1, 1)  # 3 x 1 x 1
        pixel_values = torch.zeros(len(batch), 3, pad_h, pad_w, device=device, dtype=dtype)
        pixel_mask = torch.zeros(len(batch), pad_h, pad_w, device=device, dtype=torch.int64)
        for i, image in enumerate(resized):
            _, h, w = image.shape
            normalised = (image.to(device=device, dtype=torch.float32) / 255.0 - mean) / std
            pixel_values[i, :, :h, :w] = normalised.to(dtype)
            pixel_mask[i, :h, :w] = 1
        return pixel_values, pixel_mask

    def _resize(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 -> 3 x h x w uint8 tensor (CPU)."""
        height, width = image.shape[:2]
        out_h, out_w = self.output_size(height, width)
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image, order="C")  # torch wants a writable, contiguous buffer
        tensor = torch.from_numpy(image).permute(2, 0, 1)  # 3 x H x W uint8
        if (out_h, out_w) == (height, width):
            return tensor
        # uint8 bilinear+antialias matches PIL's BILINEAR resize to within one grey level.
        resized = F.interpolate(tensor[None], size=(out_h, out_w), mode="bilinear", antialias=True)
        return resized[0]  # 3 x h x w uint8


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(
            f"detector input must be an H x W x 3 uint8 RGB array, got shape {shape} dtype {dtype}; "
            "convert it with grounded.io.images.load_image"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has no pixels (shape {image.shape})")
    return image
