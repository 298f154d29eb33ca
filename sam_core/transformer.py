"""Two-way transformer of SAM's mask decoder: prompt tokens and image tokens attend to each other.

Adapted from Meta's segment_anything/modeling/transformer.py (Apache-2.0); same parameter names.
Difference: Meta copies the image embedding once per prompt (``repeat_interleave``) before this
module. Here the image tokens may come in with batch 1 and are broadcast against B prompts: tokens
attending to a shared image fold the prompt batch into the query sequence (the keys are projected once
and never copied), and the image side only becomes per-prompt where the math makes it so (after the
first image-to-token update). Results equal Meta's to float rounding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock

__all__ = ["TwoWayTransformer", "TwoWayAttentionBlock", "Attention"]


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks followed by a final token-to-image attention."""

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    @classmethod
    def for_config(cls, config: Any) -> TwoWayTransformer:
        """The decoder transformer a SAM 1 or SAM 2 config describes (same four fields in both)."""
        return cls(depth=config.decoder_depth, embedding_dim=config.prompt_embed_dim,
                   num_heads=config.decoder_num_heads, mlp_dim=config.decoder_mlp_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        final_tokens: slice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the decoder transformer.

        Args:
            image_embedding: Bi x C x h x w, Bi = 1 (shared by all prompts) or B.
            image_pe: 1 x C x h x w (or Bi x ...) positional encoding of the grid.
            point_embedding: B x N_tokens x C prompt + output tokens.
            final_tokens: the tokens whose output the caller reads (all by default); the final
                token-to-image attention runs for these only (tokens do not interact there).

        Returns:
            queries: B x N_out x C (the ``final_tokens``); keys: Bk x h*w x C (Bk = B once any
            block has run).
        """
        # Bi x C x h x w -> Bi x hw x C, contiguous so that every later elementwise op and LayerNorm
        # on the (per-prompt) image tokens gets plain row-major inputs
        image_embedding = image_embedding.flatten(2).permute(0, 2, 1).contiguous()
        image_pe = image_pe.flatten(2).permute(0, 2, 1).contiguous()  # 1 x hw x C
        queries = point_embedding
        keys = image_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
        if final_tokens is not None:
            queries, point_embedding = queries[:, final_tokens], point_embedding[:, final_tokens]
        q = queries + point_embedding
        k = keys + image_pe
        attn_out = self.final_attn_token_to_image.tokens_to_image(q=q, k=k, v=keys)
        queries = self.norm_final_attn(queries + attn_out)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    """(1) token self-attention, (2) tokens -> image, (3) token MLP, (4) image -> tokens."""

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: B x N x C, keys: Bk x hw x C (Bk in {1, B}) -> (B x N x C, B x hw x C)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe  # unchanged until the image-to-token update below
        queries = self.norm2(queries + self.cross_attn_token_to_image.tokens_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        # Image tokens attend to each prompt's tokens: from here on the image side is per prompt.
        keys = self.norm4(self.cross_attn_image_to_token.image_to_tokens(q=k, k=q, v=queries, residual=keys))
        return queries, keys


def _softmax_dim(x: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax over ``dim`` as explicit max/exp/sum/div (in place after the subtraction): for a short
    ``dim`` with long contiguous rows behind it, each step is a vectorised pass over those rows."""
    if torch.is_grad_enabled() and x.requires_grad:
        return x.softmax(dim=dim)
    e = (x - x.amax(dim=dim, keepdim=True)).exp_()
    return e.div_(e.sum(dim=dim, keepdim=True))


class Attention(nn.Module):
    """Multi-head attention whose inner width may be downscaled (``embedding_dim // downsample_rate``).

    q: Bq x Nq x C, k/v: Bk x Nk x C with Bq and Bk each 1 or B (broadcast); returns B x Nq x C.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the attention width {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # B x heads x N x c_head

    @staticmethod
    def _recombine_heads(x: torch.Tensor) -> torch.Tensor:
        b, n_heads, n_tokens, c_per_head = x.shape
        return x.transpose(1, 2).reshape(b, n_tokens, n_heads * c_per_head)  # B x N x C_internal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # Projections run once per distinct input: a batch-1 (shared) input is projected once.
        q = self.q_proj(q)  # Bq x Nq x Ci
        k = self.k_proj(k)  # Bk x Nk x Ci
        v = self.v_proj(v)  # Bk x Nk x Ci
        Bq, Nq, _ = q.shape
        Bk = k.shape[0]
        if Bk == 1 and Bq > 1:
            # Every prompt attends to the same keys: stack all prompts' queries into one sequence.
            q = q.reshape(1, Bq * Nq, -1)  # 1 x B*Nq x Ci
            out = self._attend(q, k, v)  # 1 x B*Nq x Ci
            out = out.reshape(Bq, Nq, -1)  # B x Nq x Ci
        else:
            B = max(Bq, Bk)
            if Bq != B:
                q = q.expand(B, -1, -1)  # shared queries (image tokens) against per-prompt keys: a view
            out = self._attend(q, k, v)  # B x Nq x Ci
        return self.out_proj(out)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._separate_heads(q), self._separate_heads(k), self._separate_heads(v)
        out = F.scaled_dot_product_attention(q, k, v)  # B x heads x Nq x c_head, scale 1/sqrt(c_head)
        return self._recombine_heads(out)

    # The two cross-attentions between a few prompt tokens (T) and many image tokens (N) are
    # re-associated so that no per-prompt N x C image tensor is ever projected: the projections are
    # folded into the T-row side, (x W^T) y^T = x (y W)^T and P (x W^T + b) = (P x) W^T + b, which
    # turns two N x C x Ci products per prompt into two N x C x (heads*T) ones and removes the
    # head split/merge copies of N-row tensors. Same results to float rounding.

    def tokens_to_image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Prompt tokens attend to image tokens: q B x T x C; k, v Bk x N x C (Bk = 1 or B) -> B x T x C."""
        if k.shape[0] == 1:
            return self.forward(q, k, v)  # shared image: projecting it once for all prompts is cheaper
        B, T, C = q.shape
        H = self.num_heads
        d = self.internal_dim // H
        qh = (self.q_proj(q) * d**-0.5).view(B, T, H, d)  # B x T x H x d, scaled
        a = torch.einsum("bthd,hdc->bhtc", qh, self.k_proj.weight.view(H, d, C)).reshape(B, H * T, C)
        a_bias = torch.einsum("bthd,hd->bht", qh, self.k_proj.bias.view(H, d)).reshape(B, H * T, 1)
        probs = torch.baddbmm(a_bias, a, k.transpose(1, 2)).softmax(dim=-1)  # B x H*T x N
        pooled = torch.bmm(probs, v).view(B, H, T, C)  # B x H x T x C
        heads = torch.einsum("bhtc,hdc->bthd", pooled, self.v_proj.weight.view(H, d, C))  # B x T x H x d
        heads = heads + self.v_proj.bias.view(H, d)  # each probability row sums to 1
        return self.out_proj(heads.reshape(B, T, H * d))

    def image_to_tokens(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image tokens attend to prompt tokens: q Bq x N x C (Bq = 1 or B); k, v B x T x C -> B x N x C.

        ``residual`` (Bq x N x C), when given, is added to the output inside the last product."""
        B, T, C = k.shape
        Bq, N, _ = q.shape
        H = self.num_heads
        d = self.internal_dim // H
        kh = (self.k_proj(k) * d**-0.5).view(B, T, H, d)  # B x T x H x d, scaled
        vh = self.v_proj(v).view(B, T, H, d)  # B x T x H x d
        m = torch.einsum("hdc,bthd->bcht", self.q_proj.weight.view(H, d, C), kh).reshape(B, C, H * T)
        m_bias = torch.einsum("hd,bthd->bht", self.q_proj.bias.view(H, d), kh).reshape(B, 1, H * T)
        # Logits token-major (B x H*T x N): the softmax over each pixel's T tokens then runs along
        # contiguous N-long rows (vectorised), not over rows of T (~7) elements: ~6x faster on CPU.
        if Bq == 1 and B > 1:  # shared image queries: one (B*H*T) x C x N product
            m_t = m.permute(0, 2, 1).reshape(B * H * T, C)  # B x C x H*T -> B*H*T x C
            logits = torch.addmm(m_bias.reshape(B * H * T, 1), m_t, q[0].transpose(0, 1))  # B*H*T x N
            logits = logits.view(B, H * T, N)  # B x H*T x N
        else:
            # B x H*T x 1 + (B x H*T x C) @ (B x C x N) -> B x H*T x N
            logits = torch.baddbmm(m_bias.transpose(1, 2), m.transpose(1, 2), q.transpose(1, 2))
        # out_proj folded into the values, its bias into the product as a row of ones:
        # sum_h P_h (V_h W_o,h^T) + b_o = [P, 1] @ [V W_o^T; b_o]
        probs = logits.new_empty(B, H * T + 1, N)  # B x (H*T + 1) x N
        probs[:, -1] = 1.0
        probs[:, :-1] = _softmax_dim(logits.view(B, H, T, N), 2).view(B, H * T, N)
        probs = probs.transpose(1, 2)  # B x N x (H*T + 1), a view
        value_out = torch.einsum("bthd,chd->bhtc", vh, self.out_proj.weight.view(C, H, d))  # B x H x T x C
        value_out = torch.cat([value_out.reshape(B, H * T, C), self.out_proj.bias.expand(B, 1, C)], dim=1)
        if residual is None:
            return torch.bmm(probs, value_out)  # B x N x C
        return torch.baddbmm(residual, probs, value_out)  # B x N x C
