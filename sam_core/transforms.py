"""Resize images so their longest side is the model's image_size, and map prompts along.

Adapted from Meta's segment_anything/utils/transforms.py (Apache-2.0). ``apply_image`` resizes with
PIL's bilinear filter, exactly what Meta's torchvision ``resize`` of a PIL image does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["ResizeLongestSide"]


class ResizeLongestSide:
    """Resize to a longest side of ``target_length`` and rescale (x, y) coordinates accordingly.

    Coordinates are (x, y) pixels; boxes are xyxy. ``original_size`` is always (H, W).
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """(h, w) after scaling (oldh, oldw) so that the longer side is ``long_side_length`` (rounded)."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return int(newh + 0.5), int(neww + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 -> h x w x 3 uint8 with max(h, w) = target_length (PIL bilinear)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
            got = (
                type(image).__name__ if not isinstance(image, np.ndarray) else f"{image.dtype} {image.shape}"
            )
            raise ValueError(f"apply_image expects an H x W x 3 uint8 array, got {got}")
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.Resampling.BILINEAR)
        return np.array(resized)  # writable copy

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """... x 2 (x, y) pixels of the original image -> the resized frame (float64 copy)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=float)  # copy
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """... x 4 xyxy boxes of the original image -> K x 4 in the resized frame."""
        boxes = self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size)  # K x 2 x 2
        return boxes.reshape(-1, 4)  # K x 4

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """B x C x H x W float -> B x C x h x w (bilinear, antialiased; as Meta's torch variant)."""
        h, w = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """... x 2 (x, y) tensor of the original image -> the resized frame (float32 copy)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = coords.detach().clone().to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """... x 4 xyxy tensor of the original image -> K x 4 in the resized frame."""
        boxes = self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size)  # K x 2 x 2
        return boxes.reshape(-1, 4)  # K x 4
