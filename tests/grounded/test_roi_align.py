"""The plain-torch ``roi_align`` stand-in (SAM 3's exemplar boxes without torchvision), checked against
values known in closed form: bilinear sampling reproduces a linear ramp exactly, so each bin's
average is the ramp at the bin's centre."""

from __future__ import annotations

import types

import pytest
import torch

from grounded.detectors.roi_align import install_roi_align, roi_align


def ramps(height: int = 12, width: int = 16) -> torch.Tensor:
    rows, columns = torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32)
    ys, xs = torch.meshgrid(rows, columns, indexing="ij")  # H x W each
    return torch.stack([xs, ys, torch.ones_like(xs)])[None]  # 1 x 3 x H x W: x, y, 1


def test_interior_boxes_average_to_the_ramp_at_each_bin_centre():
    features = ramps()
    boxes = torch.tensor([[2.0, 1.0, 11.0, 7.0], [0.5, 0.5, 3.5, 9.5]])  # xyxy, inside the 16 x 12 map
    pooled = roi_align(features, [boxes], 3)  # 2 x 3 x 3 x 3
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        centres_x = x0 + (torch.arange(3) + 0.5) * (x1 - x0) / 3
        centres_y = y0 + (torch.arange(3) + 0.5) * (y1 - y0) / 3
        torch.testing.assert_close(pooled[k, 0], centres_x[None].expand(3, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(pooled[k, 1], centres_y[:, None].expand(3, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(pooled[k, 2], torch.ones(3, 3))


def test_samples_beyond_the_map_count_as_zero_and_the_border_is_clamped():
    features = ramps(4, 4)
    far = roi_align(features, [torch.tensor([[10.0, 10.0, 16.0, 16.0]])], 2)
    assert torch.equal(far, torch.zeros(1, 3, 2, 2))  # every sample past W and H
    edge = roi_align(features, [torch.tensor([[3.0, 3.0, 4.0, 4.0]])], 1)  # one sample at (3.5, 3.5)
    torch.testing.assert_close(edge[0, :, 0, 0], torch.tensor([3.0, 3.0, 1.0]))  # clamped to the last pixel


def test_boxes_of_several_images_come_back_in_order():
    features = torch.cat([ramps(), 2 * ramps()])  # 2 x 3 x 12 x 16
    box = torch.tensor([[2.0, 2.0, 6.0, 6.0]])
    pooled = roi_align(features, [box, box], 2)
    torch.testing.assert_close(pooled[1], 2 * pooled[0])


def test_install_only_where_transformers_has_no_torchvision():
    import importlib

    from grounded.detectors.tiny_sam3 import build_tiny_sam3

    build_tiny_sam3()
    modeling_sam3 = importlib.import_module("transformers.models.sam3.modeling_sam3")
    assert hasattr(modeling_sam3, "torchvision")  # installed by the SAM 3 detector (or the real one)
    module = types.SimpleNamespace(torchvision=object())
    assert install_roi_align(module) is False
    changed = types.SimpleNamespace(Sam3GeometryEncoder=types.SimpleNamespace(
        _encode_boxes=types.SimpleNamespace(__code__=types.SimpleNamespace(co_names=("roi_pool",)))))
    with pytest.raises(RuntimeError, match="no longer calls torchvision"):
        install_roi_align(changed)
