"""Hiera, SAM 2's hierarchical image trunk: four stages of windowed attention, pooled at stage changes.

Adapted from Meta's sam2/modeling/backbones/hieradet.py (Apache-2.0); same parameter names
(``patch_embed.proj``, ``pos_embed``, ``pos_embed_window``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,
norm2,mlp.layers.{0,1},proj}``). Tokens stay channels-last (B x H x W x C) throughout. Differences, all
exact: 2 x 2 max pooling as a reshape + max (no permutes), and the interpolated position embedding
is cached until the parameters change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..image_encoder import window_partition, window_unpartition

__all__ = ["Hiera", "MultiScaleBlock", "MultiScaleAttention"]


def _pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Max pool with kernel = stride over H, W of B x H x W x C (floor, as ``max_pool2d``).

    Elementwise maxima of strided views: ~10x faster on CPU than ``amax`` over reshaped dims, and
    no channels-first permutes.
    """
    H, W = x.shape[1:3]
    h, w = H // stride, W // stride
    rows = x[:, : h * stride : stride]
    for i in range(1, stride):
        rows = torch.maximum(rows, x[:, i : h * stride : stride])  # B x h x W x C
    out = rows[:, :, : w * stride : stride]
    for j in range(1, stride):
        out = torch.maximum(out, rows[:, :, j : w * stride : stride])  # B x h x w x C
    return out


class _Mlp(nn.Module):
    """Linear -> GELU -> Linear (Meta's ``MLP`` with two layers: ``layers.0``, ``layers.1``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.gelu(self.layers[0](x)))


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled (``q_stride``) to halve the grid."""

    def __init__(self, *, dim: int, dim_out: int, num_heads: int, q_stride: int | None = None) -> None:
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x H x W x dim -> B x H' x W' x dim_out (H' = H // q_stride with query pooling)."""
        B, H, W, _ = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(B, H * W, 3, heads, -1)  # B x HW x 3 x heads x c_head
        q, k, v = qkv.unbind(2)  # each B x HW x heads x c_head
        if self.q_stride:
            q = _pool(q.reshape(B, H, W, -1), self.q_stride)  # B x H' x W' x heads*c_head
            H, W = q.shape[1:3]
            q = q.reshape(B, H * W, heads, -1)  # B x H'W' x heads x c_head
        # B x heads x N x c_head; scale 1/sqrt(c_head)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(B, H, W, -1)  # B x H' x W' x dim_out
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block; windowed (``window_size`` > 0) or global attention."""

    def __init__(
        self,
        *,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        q_stride: int | None = None,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim=dim, dim_out=dim_out, num_heads=num_heads, q_stride=q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = _Mlp(dim_out, int(dim_out * mlp_ratio))
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)  # widens the shortcut at a stage change

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x H x W x dim -> B x H' x W' x dim_out."""
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = _pool(shortcut, self.q_stride)  # B x H' x W' x dim_out
        window = self.window_size
        H, W = x.shape[1:3]
        if window > 0:
            x, pad_hw = window_partition(x, window)  # B*nW x w x w x dim
        x = self.attn(x)
        if window > 0:
            if self.q_stride:  # the pooled queries tile the pooled grid with smaller windows
                window = window // self.q_stride
                H, W = shortcut.shape[1:3]
                pad_hw = (H + (-H) % window, W + (-W) % window)
            x = _add_unpartitioned(shortcut, x, window, pad_hw)  # B x H' x W' x dim_out
        else:
            x = shortcut + x
        return x + self.mlp(self.norm2(x))


def _add_unpartitioned(
    shortcut: torch.Tensor, windows: torch.Tensor, window: int, pad_hw: tuple[int, int]
) -> torch.Tensor:
    """``shortcut + window_unpartition(windows)``: B x H x W x C + B*nW x w x w x C -> B x H x W x C.

    Without padding the windows are added through a permuted view, so the un-partitioned copy is
    never made (the sum is the one new tensor).
    """
    B, H, W, C = shortcut.shape
    if (H, W) != tuple(pad_hw):
        return shortcut + window_unpartition(windows, window, pad_hw, (H, W))
    nh, nw = H // window, W // window
    # B*nW x w x w x C -> B x nh x w x nw x w x C (a view)
    windows = windows.reshape(B, nh, nw, window, window, C).permute(0, 1, 3, 2, 4, 5)
    out = shortcut.reshape(B, nh, window, nw, window, C) + windows
    return out.reshape(B, H, W, C)


class _PatchEmbed(nn.Module):
    """7 x 7 convolution with stride 4: B x 3 x S x S -> B x S/4 x S/4 x C."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last input makes the convolution write B x H x W x C memory: the permute is free
        x = x.contiguous(memory_format=torch.channels_last)
        return self.proj(x).permute(0, 2, 3, 1)  # B x H x W x C


class Hiera(nn.Module):
    """Four stages (strides 4, 8, 16, 32); returns each stage's last output, finest first."""

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        stages: tuple[int, ...],
        global_att_blocks: tuple[int, ...],
        window_pos_embed_bkg_spatial_size: tuple[int, int],
        window_spec: tuple[int, ...],
        mlp_ratio: float = 4.0,
        q_stride: int = 2,
        q_pool: int = 3,
    ) -> None:
        super().__init__()
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.patch_embed = _PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.blocks = nn.ModuleList()
        dim, stage = embed_dim, 0
        for i in range(sum(stages)):
            # the window is the current stage's until this block's own stage change takes effect
            window = 0 if i in global_att_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                stage += 1
                dim_out, num_heads = dim * 2, num_heads * 2
            self.blocks.append(
                MultiScaleBlock(
                    dim=dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    q_stride=q_stride if i in q_pool_blocks else None,
                    window_size=window,
                )
            )
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends]  # finest first
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None

    def _get_pos_embed(self, hw: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """Bicubic-resized background + tiled window embedding: 1 x h x w x C (cached)."""
        key = (hw, dtype, self.pos_embed.device, self.pos_embed._version, self.pos_embed_window._version)
        key += (self.pos_embed.data_ptr(), self.pos_embed_window.data_ptr())
        if self._pos_cache is not None and self._pos_cache[0] == key and not torch.is_grad_enabled():
            return self._pos_cache[1]
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")  # 1 x C x h x w
        window = self.pos_embed_window
        pos = pos + window.tile([1, 1, hw[0] // window.shape[2], hw[1] // window.shape[3]])
        pos = pos.permute(0, 2, 3, 1).to(dtype)  # 1 x h x w x C
        if not torch.is_grad_enabled():
            self._pos_cache = (key, pos)
        return pos

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """B x 3 x S x S normalised pixels -> [B x S/4 x S/4 x C, ..., B x S/32 x S/32 x 8C] channels-last."""
        x = self.patch_embed(x)  # B x S/4 x S/4 x C
        x = x + self._get_pos_embed(tuple(x.shape[1:3]), x.dtype)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x)
        return outputs
