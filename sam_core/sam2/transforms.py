"""SAM 2's input transform: resize to image_size x image_size (aspect ratio NOT kept), no padding.

Same interface as ``sam_core.ResizeLongestSide`` so that ``SamPredictor`` runs SAM 2 unchanged.
Meta's SAM2Transforms resizes the 0..1 float image with torchvision's bilinear, antialiased resize;
``apply_image`` does the same with ``F.interpolate`` (in 0..255 units, scaled by ``Sam2.preprocess``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ResizeSquare"]


class ResizeSquare:
    """Resize to ``target_length`` squared; (x, y) scale by target/W and target/H.

    Coordinates are (x, y) pixels; boxes are xyxy. ``original_size`` is always (H, W).
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """Every image becomes long_side_length x long_side_length."""
        return long_side_length, long_side_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 -> S x S x 3 float32 in 0..255 (bilinear, antialiased)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            got = (
                type(image).__name__ if not isinstance(image, np.ndarray) else f"{image.dtype} {image.shape}"
            )
            raise ValueError(f"apply_image expects an H x W x 3 uint8 array, got {got}")
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()  # 1 x 3 x H x W
        return self.apply_image_torch(x)[0].permute(1, 2, 0).numpy()  # S x S x 3

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """B x C x H x W float -> B x C x S x S."""
        size = (self.target_length, self.target_length)
        return F.interpolate(image.float(), size, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """... x 2 (x, y) pixels of the original image -> the resized frame (float64 copy)."""
        old_h, old_w = original_size
        coords = np.array(coords, dtype=float)
        coords[..., 0] = coords[..., 0] * (self.target_length / old_w)
        coords[..., 1] = coords[..., 1] * (self.target_length / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """... x 4 xyxy -> K x 4 in the resized frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """... x 2 (x, y) tensor of the original image -> the resized frame (float32 copy)."""
        old_h, old_w = original_size
        coords = coords.detach().clone().to(torch.float)
        coords[..., 0] = coords[..., 0] * (self.target_length / old_w)
        coords[..., 1] = coords[..., 1] * (self.target_length / old_h)
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """... x 4 xyxy tensor -> K x 4 in the resized frame."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
