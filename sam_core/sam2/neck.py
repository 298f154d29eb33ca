"""SAM 2's image encoder: the Hiera trunk plus a feature-pyramid neck to one width at three strides.

Adapted from Meta's sam2/modeling/backbones/image_encoder.py (Apache-2.0), image path only: the neck
has Meta's image settings (top-down fusion into stride 16 only, nearest upsampling, the stride-32
level dropped: ``scalp=1``) and skips the sine position encodings, which only the video memory reads.
Parameter names as Meta's (``trunk.*``, ``neck.convs.{i}.conv.*``; ``convs[0]`` is the coarsest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hiera import Hiera

__all__ = ["FpnNeck", "ImageEncoder"]


class _LateralConv(nn.Module):
    """A 1 x 1 convolution, kept as ``conv`` for Meta's key names; applied to channels-last tokens."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)


def _linear_1x1(x: torch.Tensor, *convs: nn.Conv2d) -> torch.Tensor:
    """B x H x W x Cin -> B x H x W x Cout through 1 x 1 convolutions, composed into one matrix.

    conv_b(conv_a(x)) = (Wb Wa) x + (Wb ba + bb): the stride-4 level (65k tokens at 1024) goes straight
    from the trunk width to the decoder's 32 channels instead of through 256.
    """
    weight, bias = convs[0].weight.flatten(1).float(), convs[0].bias.float()  # Cout x Cin, Cout
    for conv in convs[1:]:
        w = conv.weight.flatten(1).float()
        weight, bias = w @ weight, torch.addmv(conv.bias.float(), w, bias)
    return F.linear(x, weight.to(x.dtype), bias.to(x.dtype))


class FpnNeck(nn.Module):
    """Trunk stages (finest first) -> ``d_model`` channels at strides 4, 8, 16 (B x C x H x W each)."""

    def __init__(self, *, d_model: int, backbone_channel_list: list[int]) -> None:
        super().__init__()
        # coarsest first, as Meta's backbone_channel_list
        self.convs = nn.ModuleList(_LateralConv(c, d_model) for c in backbone_channel_list)

    def forward(
        self, xs: list[torch.Tensor], high_res_projections: tuple[nn.Conv2d, nn.Conv2d] | None = None
    ) -> list[torch.Tensor]:
        """xs: 4 channels-last stages, finest first -> [stride 4, stride 8, stride 16] B x C x H x W.

        ``high_res_projections`` (the decoder's conv_s0, conv_s1) are applied to the stride-4 and
        stride-8 levels, composed with their lateral convs (see ``_linear_1x1``).
        """
        lateral = [conv.conv for conv in reversed(self.convs)]  # finest first, like xs
        coarse = _linear_1x1(xs[3], lateral[3])  # B x S/32 x S/32 x C
        B, h, w, C = coarse.shape
        # nearest 2x upsampling: B x h x 1 x w x 1 x C -> B x 2h x 2w x C
        top_down = coarse[:, :, None, :, None].expand(B, h, 2, w, 2, C).reshape(B, 2 * h, 2 * w, C)
        mid = _linear_1x1(xs[2], lateral[2]) + top_down  # B x S/16 x S/16 x C
        extra = [(p,) for p in high_res_projections] if high_res_projections else [(), ()]
        fine = [_linear_1x1(xs[0], lateral[0], *extra[0]), _linear_1x1(xs[1], lateral[1], *extra[1])]
        # B x H x W x C -> B x C x H x W
        return [f.permute(0, 3, 1, 2).contiguous() for f in (*fine, mid)]


class ImageEncoder(nn.Module):
    """Hiera trunk + FPN neck; ``forward`` returns the stride 4, 8, 16 features (B x C x H x W)."""

    def __init__(self, *, trunk: Hiera, neck: FpnNeck, img_size: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.img_size = img_size

    def forward(
        self, x: torch.Tensor, high_res_projections: tuple[nn.Conv2d, nn.Conv2d] | None = None
    ) -> list[torch.Tensor]:
        return self.neck(self.trunk(x), high_res_projections)
