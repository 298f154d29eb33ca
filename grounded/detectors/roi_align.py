"""``torchvision.ops.roi_align`` in plain torch, for SAM 3's exemplar boxes when torchvision is absent.

transformers' ``Sam3GeometryEncoder`` pools image features inside each exemplar box with
``torchvision.ops.roi_align(features, boxes, output_size)`` (spatial_scale 1, adaptive sampling
ratio, ``aligned=False``). This project installs no torchvision at runtime, so
:func:`install_roi_align` gives transformers' module this function under that name, and only when
torchvision is missing (with torchvision installed, transformers' own import is used unchanged).

Ported from torchvision's CPU kernel (``roi_align_kernel.cpp``, BSD-3): the same sample positions,
the same clamping at the borders, the same average; vectorised over the sample grid of each box.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence

import torch

__all__ = ["install_roi_align", "roi_align"]


def roi_align(
    features: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: int | tuple[int, int]
) -> torch.Tensor:
    """Average of bilinear samples in each box's ``output_size`` bins (torchvision semantics, aligned=False).

    Args:
        features: B x C x H x W.
        boxes: B tensors, the b-th K_b x 4 xyxy in feature-map pixels.
        output_size: bins per side (h, w) or one int for both.

    Returns:
        K x C x out_h x out_w, K = sum of K_b, boxes in order.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    _, channels, height, width = features.shape
    pooled = []
    for b, batch_boxes in enumerate(boxes):
        for x1, y1, x2, y2 in batch_boxes.float().tolist():  # a few user-given exemplar boxes
            roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
            grid_h, grid_w = math.ceil(roi_h / out_h), math.ceil(roi_w / out_w)  # samples per bin
            ys = _sample_positions(y1, roi_h / out_h, out_h, grid_h, features.device)  # out_h*grid_h
            xs = _sample_positions(x1, roi_w / out_w, out_w, grid_w, features.device)  # out_w*grid_w
            samples = _bilinear(features[b].float(), ys, xs, height, width)  # C x out_h*grid_h x out_w*grid_w
            samples = samples.view(channels, out_h, grid_h, out_w, grid_w)
            pooled.append(samples.mean(dim=(2, 4)))  # C x out_h x out_w
    if not pooled:
        return features.new_zeros(0, channels, out_h, out_w)
    return torch.stack(pooled).to(features.dtype)  # K x C x out_h x out_w


def _sample_positions(
    start: float, bin_size: float, bins: int, grid: int, device: torch.device
) -> torch.Tensor:
    """Sample coordinates, bin-major: start + bin * bin_size + (i + 0.5) * bin_size / grid."""
    index = torch.arange(bins, device=device, dtype=torch.float32)[:, None]  # bins x 1
    offset = (torch.arange(grid, device=device, dtype=torch.float32)[None, :] + 0.5) / grid  # 1 x grid
    return (start + (index + offset) * bin_size).reshape(-1)  # bins*grid


def _bilinear(
    image: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """C x len(ys) x len(xs) samples of ``image`` (C x H x W); zero outside [-1, H] x [-1, W]."""
    y_ok = (ys >= -1.0) & (ys <= height)
    x_ok = (xs >= -1.0) & (xs <= width)
    y0, y1, ly = _corners(ys.clamp(min=0.0), height)
    x0, x1, lx = _corners(xs.clamp(min=0.0), width)
    hy, hx = 1.0 - ly, 1.0 - lx
    rows = image[:, y0] * hy[None, :, None] + image[:, y1] * ly[None, :, None]  # C x Y x W
    values = rows[:, :, x0] * hx[None, None, :] + rows[:, :, x1] * lx[None, None, :]  # C x Y x X
    return values * (y_ok[:, None] & x_ok[None, :])[None]


def _corners(coords: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Low index, high index and weight of the high one; at the last row/column both are that row."""
    low = coords.floor().long()
    last = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(last, low, low + 1)
    weight = torch.where(last, torch.zeros_like(coords), coords - low.float())
    return low, high, weight


def install_roi_align(module: types.ModuleType) -> bool:
    """Give ``module`` (transformers' ``modeling_sam3``) a ``torchvision.ops.roi_align`` if it has none.

    Returns True when the stand-in was installed, False when the module already has torchvision.
    Raises ``RuntimeError`` if transformers stops calling roi_align through a ``torchvision`` name
    (the stand-in would then silently do nothing).
    """
    if hasattr(module, "torchvision"):
        return False
    source = module.Sam3GeometryEncoder._encode_boxes.__code__.co_names
    if "torchvision" not in source:
        raise RuntimeError(
            "transformers' Sam3GeometryEncoder no longer calls torchvision.ops.roi_align; update "
            "grounded.detectors.roi_align for this transformers version"
        )
    module.torchvision = types.SimpleNamespace(ops=types.SimpleNamespace(roi_align=roi_align))
    return True
