"""Input checks for the predictor: every refusal is a ValueError that names the problem and the fix."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_image", "check_points", "check_box", "check_mask_input", "check_prompt_batch"]


def check_image(image: object, image_format: str) -> np.ndarray:
    """An H x W x 3 uint8 array in ``image_format`` ('RGB' or 'BGR')."""
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (H x W x 3 uint8), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be H x W x 3, got shape {image.shape}; convert grayscale with "
            "np.stack([img] * 3, -1) and drop alpha with img[..., :3]"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"image must be uint8 in 0..255, got {image.dtype}; for floats in 0..1 use "
            "(img * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image


def check_points(
    point_coords: object, point_labels: object, original_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """N x 2 (x, y) pixels of the original image + N labels -> (float64 N x 2, int64 N)."""
    if point_coords is not None and point_labels is None:
        raise ValueError(
            "point_labels must be supplied with point_coords: one label per point "
            "(1 = foreground, 0 = background)"
        )
    if point_coords is None:
        raise ValueError("point_labels were given without point_coords")
    coords = np.asarray(point_coords, dtype=np.float64)
    labels = np.asarray(point_labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
        raise ValueError(f"point_coords must be N x 2 (x, y) with N >= 1, got shape {coords.shape}")
    if labels.shape != (len(coords),):
        raise ValueError(
            f"point_labels must have one label per point: shape ({len(coords)},), got {labels.shape}"
        )
    if not np.isfinite(coords).all():
        raise ValueError("point_coords contain NaN or infinity")
    labels = _int_labels(labels)
    height, width = original_size
    outside = (coords[:, 0] < 0) | (coords[:, 0] > width) | (coords[:, 1] < 0) | (coords[:, 1] > height)
    if outside.any():
        first = coords[outside][0].tolist()
        raise ValueError(
            f"{int(outside.sum())} point(s) lie outside the {width} x {height} image (W x H), "
            f"e.g. (x, y) = {first}; coordinates are pixels of the original image"
        )
    return coords, labels


def _int_labels(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind not in "iub" and not (
        labels.dtype.kind == "f" and np.all(labels == np.round(labels))
    ):
        raise ValueError(
            f"point_labels must be integers (1 = foreground, 0 = background), got {labels.dtype}"
        )
    labels = labels.astype(np.int64)
    bad = sorted(set(labels.tolist()) - {-1, 0, 1})
    if bad:
        raise ValueError(f"point_labels must be 1 (foreground), 0 (background) or -1 (ignore), got {bad}")
    return labels


def check_box(box: object, original_size: tuple[int, int]) -> np.ndarray:
    """One xyxy box (shape 4 or 1 x 4) in pixels of the original image -> 1 x 4 float64."""
    arr = np.asarray(box, dtype=np.float64)
    if arr.shape not in ((4,), (1, 4)):
        raise ValueError(
            f"box must be one xyxy box of shape (4,) or (1, 4), got {arr.shape}; "
            "for several boxes use predict_torch (all boxes in one decoder call)"
        )
    arr = arr.reshape(1, 4)  # 1 x 4
    if not np.isfinite(arr).all():
        raise ValueError(f"box contains NaN or infinity: {arr[0].tolist()}")
    x0, y0, x1, y1 = arr[0].tolist()
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {arr[0].tolist()} is degenerate: need x1 > x0 and y1 > y0 (xyxy format)")
    height, width = original_size
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box {arr[0].tolist()} lies outside the {width} x {height} image (W x H)")
    return arr


def check_mask_input(mask_input: object, size: int) -> np.ndarray:
    """A 1 x size x size low-res mask (logits) -> float32 array."""
    arr = np.asarray(mask_input, dtype=np.float32)
    if arr.shape != (1, size, size):
        raise ValueError(
            f"mask_input must be 1 x {size} x {size} low-res logits (one of the low-res masks a "
            f"previous predict returned, e.g. low_res[i:i + 1]), got shape {arr.shape}"
        )
    return arr


def check_prompt_batch(
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_input: torch.Tensor | None,
    mask_size: int,
) -> torch.Tensor | None:
    """Shape checks for ``predict_torch``; returns ``boxes`` as B x 4 (a B x 1 x 4 input is flattened)."""
    batch: dict[str, int] = {}
    if point_coords is not None:
        if point_labels is None:
            raise ValueError(
                "point_labels must be supplied with point_coords (B x N, 1 = foreground, 0 = background)"
            )
        if point_coords.ndim != 3 or point_coords.shape[-1] != 2:
            raise ValueError(f"point_coords must be B x N x 2, got {tuple(point_coords.shape)}")
        if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
            raise ValueError(
                f"point_labels must be B x N = {tuple(point_coords.shape[:2])}, "
                f"got {tuple(point_labels.shape)}"
            )
        if not torch.isfinite(point_coords).all():
            raise ValueError("point_coords contain NaN or infinity")
        batch["point_coords"] = point_coords.shape[0]
    elif point_labels is not None:
        raise ValueError("point_labels were given without point_coords")
    if boxes is not None:
        if boxes.ndim == 3 and boxes.shape[1] == 1:
            boxes = boxes[:, 0]  # B x 1 x 4 -> B x 4
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be B x 4 (xyxy, input frame), got {tuple(boxes.shape)}")
        if not torch.isfinite(boxes).all():
            raise ValueError("boxes contain NaN or infinity")
        batch["boxes"] = boxes.shape[0]
    if mask_input is not None:
        if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != (1, mask_size, mask_size):
            raise ValueError(
                f"mask_input must be B x 1 x {mask_size} x {mask_size}, got {tuple(mask_input.shape)}"
            )
        if mask_input.shape[0] != 1 or not batch:
            batch["mask_input"] = mask_input.shape[0]
    if len(set(batch.values())) > 1:
        raise ValueError(f"prompt batch sizes disagree: {batch}; give one entry per prompt")
    return boxes
