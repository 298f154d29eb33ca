"""MobileSAM's image encoder: TinyViT (a conv stage, then windowed attention with learnt biases).

Adapted from Microsoft's TinyViT as used by ChaoningZhang/MobileSAM (``tiny_vit_sam.py``, Apache-2.0).
Parameter names follow that file, so ``mobile_sam.pt`` loads unchanged; attention runs through
``F.scaled_dot_product_attention`` with the per-offset bias table as its additive mask. The
classifier head TinyViT carries for ImageNet is not built (SAM never uses it; the loader drops it).
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .config import TinyViTConfig
from .image_encoder import window_partition, window_unpartition

__all__ = ["TinyViT", "TINY_VIT_CLASSIFIER_KEYS"]

# ImageNet head of the distilled TinyViT, saved in MobileSAM's checkpoint but unused by SAM.
TINY_VIT_CLASSIFIER_KEYS = ("norm_head.weight", "norm_head.bias", "head.weight", "head.bias")


class TinyViT(nn.Module):
    """B x 3 x S x S normalised pixels -> B x out_chans x S/16 x S/16 image embedding.

    ``forward(x, return_early=True)`` also returns the output of the first attention stage
    (B x S/16 x S/16 x embed_dims[2], channels last): the early features SAM-HQ's light model fuses.
    """

    def __init__(self, *, config: TinyViTConfig, img_size: int = 1024, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        dims = config.embed_dims
        self.patch_embed = PatchEmbed(in_chans=3, embed_dim=dims[0])  # /4
        side = img_size // 4
        self.layers = nn.ModuleList()
        for i in range(4):
            merge = None
            if i < 3:
                merge = PatchMerging(dim=dims[i], out_dim=dims[i + 1], stride=config.merge_strides[i])
            if i == 0:
                self.layers.append(
                    ConvLayer(dim=dims[0], depth=config.depths[0], expand_ratio=config.mbconv_expand_ratio)
                )
                self.layers[0].downsample = merge
            else:
                self.layers.append(
                    BasicLayer(
                        dim=dims[i],
                        resolution=(side, side),
                        depth=config.depths[i],
                        num_heads=config.num_heads[i],
                        window_size=config.window_sizes[i],
                        mlp_ratio=config.mlp_ratio,
                        local_conv_size=config.local_conv_size,
                        downsample=merge,
                    )
                )
            if i < 3:
                side //= config.merge_strides[i]
            if i == 1:
                self.early_grid = side  # after stage 1's merge
        self.grid = side
        self.neck = nn.Sequential(
            nn.Conv2d(dims[3], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(
        self, x: torch.Tensor, *, return_early: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: B x 3 x S x S -> B x out_chans x g x g (and B x g x g x C2 early features)."""
        dtype = self.neck[0].weight.dtype
        # channels-last images throughout: the token <-> image views below are then free (no copies)
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)  # B x C0 x S/4 x S/4
        x = self.layers[0](x)  # B x (S/8)^2 x C1 tokens (after the merge)
        early = None
        for i in range(1, len(self.layers)):
            x = self.layers[i](x)  # B x L x C tokens
            if i == 1:
                early = x
        B, L, C = x.shape
        if L != self.grid * self.grid:
            raise ValueError(f"TinyViT built for {self.img_size} px input got {L} tokens at its output")
        x = x.view(B, self.grid, self.grid, C).permute(0, 3, 1, 2)  # B x C x g x g (channels last)
        x = self.neck(x).contiguous()
        if not return_early:
            return x
        B, _, C2 = early.shape
        return x, early.reshape(B, self.early_grid, self.early_grid, C2)  # B x g' x g' x C2


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (TinyViT's ``Conv2d_BN``: keys ``c.*``, ``bn.*``).

    In eval mode the BatchNorm is folded into the convolution's weight and bias at each call (one
    pass over the activations instead of two; the weights are tiny next to them).
    """

    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.add_module(
            "c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, pad, groups=groups, bias=False)
        )
        self.add_module("bn", nn.BatchNorm2d(out_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.c, self.bn
        if bn.training:
            return bn(conv(x))
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # per output channel
        weight = conv.weight * scale.view(-1, 1, 1, 1)  # out x in/groups x k x k
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 conv+BN with GELU between: B x 3 x S x S -> B x C x S/4 x S/4."""

    def __init__(self, *, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, 2), nn.GELU(), ConvBN(embed_dim // 2, embed_dim, 3, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU (B x C x H x W)."""

    def __init__(self, *, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _gelu_(self.conv2(_gelu_(self.conv1(x))))  # 4x wider than x: no extra copies
        out = self.conv3(y)
        return _gelu_(out.add_(x) if _inplace_ok(out) else out + x)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on B x C x H x W, then the patch merge (-> tokens)."""

    def __init__(self, *, dim: int, depth: int, expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim=dim, expand_ratio=expand_ratio) for _ in range(depth))
        self.downsample: PatchMerging | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class PatchMerging(nn.Module):
    """1x1 conv, strided 3x3 depthwise conv, 1x1 conv (GELU between): -> B x L' x out_dim tokens."""

    def __init__(self, *, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """x: B x C x H x W, or B x L x C tokens with ``hw = (H, W)``."""
        if x.ndim == 3:
            B, L, C = x.shape
            x = x.view(B, hw[0], hw[1], C).permute(0, 3, 1, 2)  # B x C x H x W (channels last)
        x = self.conv3(_gelu_(self.conv2(_gelu_(self.conv1(x)))))  # B x out x H' x W'
        return x.flatten(2).transpose(1, 2)  # B x H'W' x out (a view when channels last)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on B x L x C tokens of an H x W grid, then an optional merge."""

    def __init__(
        self,
        *,
        dim: int,
        resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.blocks = nn.ModuleList(
            TinyViTBlock(
                dim=dim,
                resolution=resolution,
                num_heads=num_heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                local_conv_size=local_conv_size,
            )
            for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x, self.resolution)


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise conv, MLP (residual): B x L x C -> B x L x C."""

    def __init__(
        self,
        *,
        dim: int,
        resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.window_size = window_size
        self.attn = Attention(dim=dim, num_heads=num_heads, window_size=window_size)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.resolution
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"TinyViT block for a {H} x {W} grid got {L} tokens")
        # zero padding to whole windows takes part in attention, as in TinyViT
        windows, pad_hw = window_partition(x.view(B, H, W, C), self.window_size)  # nW*B x w x w x C
        nw, w = windows.shape[0], self.window_size
        attn = self.attn(windows.view(nw, w * w, C)).view(nw, w, w, C)  # per window: w*w tokens
        x = x + window_unpartition(attn, w, pad_hw, (H, W)).view(B, L, C)  # B x H x W x C -> B x L x C
        x = self.local_conv(x.view(B, H, W, C).permute(0, 3, 1, 2))  # B x C x H x W (channels last)
        x = x.permute(0, 2, 3, 1).reshape(B, L, C)  # B x L x C (a view when channels last)
        return x + self.mlp(x)


class Mlp(nn.Module):
    """Pre-norm MLP: LayerNorm, fc1, GELU, fc2."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(_gelu_(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Pre-norm self-attention in one window with a learnt bias per head and |dy|, |dx| offset."""

    def __init__(self, *, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads  # TinyViT in SAM: attn_ratio 1, so q, k and v share a width
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        idxs, offsets = _offset_index(window_size)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, offsets))
        # N x N (N = w*w) offset index: a constant, kept out of the module's buffers so that building
        # on the meta device + to_empty (how checkpoints load) cannot leave it uninitialised
        self._bias_idxs = idxs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x N x C (B counts windows) -> B x N x C."""
        B, N, C = x.shape
        # B x N x heads x (q|k|v per head) -> 3 x B x heads x N x hd
        qkv = self.qkv(self.norm(x)).view(B, N, self.num_heads, 3, self.key_dim)  # q|k|v per head
        qkv = qkv.permute(3, 0, 2, 1, 4)  # 3 x B x heads x N x hd
        q, k, v = qkv.unbind(0)
        if self._bias_idxs.device != x.device:
            self._bias_idxs = self._bias_idxs.to(x.device)
        bias = self.attention_biases[:, self._bias_idxs].to(q.dtype)  # heads x N x N
        # a 4-d mask (batch broadcast as a stride-0 view): CPU SDPA then takes its flash kernel; with
        # a 3-d mask it falls back to the ~3x slower math path
        bias = bias.unsqueeze(0).expand(B, -1, -1, -1)  # B x heads x N x N, no copy
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # B x heads x N x hd
        return self.proj(x.transpose(1, 2).reshape(B, N, C))  # B x N x heads*hd


def _inplace_ok(x: torch.Tensor) -> bool:
    return not (torch.is_grad_enabled() and x.requires_grad)


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    """GELU, in place on a fresh activation at inference (saves one large buffer per call)."""
    return torch.ops.aten.gelu_(x) if _inplace_ok(x) else F.gelu(x)


@functools.lru_cache(maxsize=8)
def _offset_index(window_size: int) -> tuple[torch.Tensor, int]:
    """(N x N index of each query/key pair's (|dy|, |dx|) offset, number of offsets), N = w*w."""
    points = list(itertools.product(range(window_size), range(window_size)))
    seen: dict[tuple[int, int], int] = {}
    idxs = [seen.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(seen)) for a in points for b in points]
    table = torch.tensor(idxs, dtype=torch.long, device="cpu")  # not the meta device of a lazy build
    return table.view(len(points), len(points)), len(seen)  # N x N
