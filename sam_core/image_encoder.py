"""SAM's image encoder: a ViT with windowed + global attention and a 256-channel neck.

Adapted from Meta's segment_anything/modeling/image_encoder.py (Apache-2.0); attention runs through
``F.scaled_dot_product_attention`` with the decomposed relative-position bias as its additive mask.
Parameter names and layouts are Meta's, so its checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock

__all__ = [
    "ImageEncoderViT",
    "Block",
    "Attention",
    "PatchEmbed",
    "window_partition",
    "window_unpartition",
    "get_rel_pos",
    "rel_pos_bias",
]

# Largest attention bias (elements) materialised at once by a global-attention block: 48 Mi floats
# = 192 MB in float32 = 16 query rows of ViT-B's 64 x 64 grid (the whole bias would be ~800 MB);
# measured on CPU as fast as one block or faster, and much smaller blocks slow SDPA down.
_BIAS_ELEMENTS = 48 * 1024 * 1024


class ImageEncoderViT(nn.Module):
    """B x 3 x S x S normalised pixels -> B x out_chans x S/patch x S/patch image embedding."""

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        window_size: int = 0,
        global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        # Absolute position embedding at the pretraining grid (zero-initialised, learnt).
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(
        self, x: torch.Tensor, *, return_early: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: B x 3 x S x S (any float dtype; run in the encoder's dtype) -> B x out_chans x g x g.

        ``return_early=True`` also returns the tokens after the first global-attention block
        (B x g x g x embed_dim): the early features SAM-HQ fuses (SysCV's ``interm_embeddings[0]``).
        """
        x = x.to(self.pos_embed.dtype)
        x = self.patch_embed(x)  # B x g x g x C
        if self.pos_embed.shape[1:3] != x.shape[1:3]:
            raise ValueError(
                f"input gives a {tuple(x.shape[1:3])} token grid but the encoder was built for "
                f"{tuple(self.pos_embed.shape[1:3])}; pad images to {self.img_size} x {self.img_size}"
            )
        x = x + self.pos_embed
        early = None
        for blk in self.blocks:
            x = blk(x)
            if early is None and blk.window_size == 0:
                early = x
        out = self.neck(x.permute(0, 3, 1, 2))  # B x C x g x g -> B x out_chans x g x g
        if not return_early:
            return out
        if early is None:
            raise ValueError(
                "SAM-HQ needs a global-attention block for its early features; this ViT has none"
            )
        return out, early


class Block(nn.Module):
    """Pre-norm transformer block; attention is windowed when ``window_size > 0``, else global."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x H x W x C -> B x H x W x C."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)  # B*nW x w x w x C
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))  # B x H x W x C
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and decomposed relative position bias."""

    def __init__(
        self, dim: int, *, num_heads: int = 8, qkv_bias: bool = True, input_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # One learnt vector per relative offset along each axis (2*size - 1 offsets), zero-initialised.
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x H x W x C -> B x H x W x C (B counts windows for windowed blocks)."""
        B, H, W, C = x.shape
        # B x HW x 3 x heads x hd -> 3 x B x heads x HW x hd
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each B x heads x HW x hd
        # Global blocks: the bias would be B x heads x HW x HW (~800 MB for ViT-B at 1024 px); attend
        # in blocks of query rows whose bias fits _BIAS_ELEMENTS, all written into ONE buffer (fresh
        # large allocations cost more in page faults than the arithmetic). Same result.
        rows = max(1, min(H, _BIAS_ELEMENTS // (B * self.num_heads * W * H * W)))
        grad = torch.is_grad_enabled() and (q.requires_grad or self.rel_pos_h.requires_grad)
        buffer = None if grad else q.new_empty(B * self.num_heads * rows * W * H * W)  # autograd: no out=
        outs = []
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            q_rows = q[:, :, r0 * W : r1 * W]  # B x heads x (r1-r0)*W x hd
            out = None if buffer is None else buffer[: q_rows.numel() // q_rows.shape[-1] * H * W]
            bias = rel_pos_bias(
                q_rows, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W), rows=(r0, r1), out=out
            )
            outs.append(F.scaled_dot_product_attention(q_rows, k, v, attn_mask=bias))
        x = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)  # B x heads x HW x hd
        x = x.transpose(1, 2).reshape(B, H, W, C)  # B x HW x heads x hd -> B x H x W x C
        return self.proj(x)


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size convolution: B x 3 x S x S -> B x S/p x S/p x C."""

    def __init__(self, *, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # B x C x g x g -> B x g x g x C


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B x H x W x C -> (B*nW x w x w x C windows, padded (Hp, Wp)); pads bottom/right with zeros.

    As in Meta's model, the zero padding tokens take part in attention (they are not masked out).
    """
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # B x Hp x Wp x C
    Hp, Wp = H + pad_h, W + pad_w
    nh, nw = Hp // window_size, Wp // window_size
    x = x.reshape(B, nh, window_size, nw, window_size, C)  # B x nh x w x nw x w x C
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)  # B*nW x w x w x C
    return windows, (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """B*nW x w x w x C windows -> B x H x W x C, dropping the padding added by ``window_partition``."""
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window_size // window_size)
    nh, nw = Hp // window_size, Wp // window_size
    x = windows.reshape(B, nh, nw, window_size, window_size, -1)  # B x nh x nw x w x w x C
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)  # B x Hp x Wp x C
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Embeddings of every (query, key) offset along one axis: L x hd table -> q_size x k_size x hd.

    The table is linearly resized when it was learnt for another size (Meta's behaviour).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),  # 1 x hd x L
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)  # max_rel_dist x hd
    # Scale the coords with short length if shapes for q and k are different.
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative_coords.long()]  # q_size x k_size x hd


def rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
    *,
    rows: tuple[int, int] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decomposed relative-position bias (MViTv2) as an additive attention mask.

    q: B x heads x (qh*qw) x hd (unscaled queries), or only query rows ``rows = (r0, r1)`` of the
    qh x qw grid: B x heads x ((r1-r0)*qw) x hd. Returns B x heads x (that many queries) x (kh*kw) with
    ``bias[(i, j), (k, l)] = q_ij . Rh[i - k] + q_ij . Rw[j - l]`` -- the term Meta adds to the logits.
    ``out``: optional contiguous storage with exactly that many elements, written in place
    (inference only: autograd does not support ``out=``).
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    r0, r1 = rows if rows is not None else (0, q_h)
    Rh = get_rel_pos(q_h, k_h, rel_pos_h).to(q.dtype)[r0:r1]  # (r1-r0) x kh x hd
    Rw = get_rel_pos(q_w, k_w, rel_pos_w).to(q.dtype)  # qw x kw x hd
    B, n_heads, _, dim = q.shape
    r_q = q.reshape(B, n_heads, r1 - r0, q_w, dim)  # B x heads x rows x qw x hd
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, Rh)  # B x heads x rows x qw x kh
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, Rw)  # B x heads x rows x qw x kw
    shape = (B, n_heads, r1 - r0, q_w, k_h, k_w)
    if out is None:
        bias = rel_h[..., :, None] + rel_w[..., None, :]  # B x heads x rows x qw x kh x kw
        return bias.reshape(B, n_heads, (r1 - r0) * q_w, k_h * k_w)
    # into given contiguous storage (no autograd): no fresh allocation, and the final view is free
    torch.add(rel_h[..., :, None], rel_w[..., None, :], out=out.view(shape))
    return out.view(B, n_heads, (r1 - r0) * q_w, k_h * k_w)
