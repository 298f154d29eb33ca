"""Two-way transformer of SAM's mask decoder: prompt tokens and image tokens attend to each other.

Adapted from Meta's segment_anything/modeling/transformer.py (Apache-2.0); same parameter names.
Difference: Meta copies the image embedding once per prompt (``repeat_interleave``) before this
module. Here the image tokens may come in with batch 1 and are broadcast against B prompts: tokens
attending to a shared image fold the prompt batch into the query sequence (the keys are projected once
and never copied), and the image side only becomes per-prompt where the math makes it so (after the
first image-to-token update). Results equal Meta's to float rounding.
"""

from __future__ import annotations

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

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the decoder transformer.

        Args:
            image_embedding: Bi x C x h x w, Bi = 1 (shared by all prompts) or B.
            image_pe: 1 x C x h x w (or Bi x ...) positional encoding of the grid.
            point_embedding: B x N_tokens x C prompt + output tokens.

        Returns:
            queries: B x N_tokens x C; keys: Bk x h*w x C (Bk = B once any block has run).
        """
        image_embedding = image_embedding.flatten(2).permute(0, 2, 1)  # Bi x C x h x w -> Bi x hw x C
        image_pe = image_pe.flatten(2).permute(0, 2, 1)  # 1 x hw x C
        queries = point_embedding
        keys = image_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
        q = queries + point_embedding
        k = keys + image_pe
        attn_out = self.final_attn_token_to_image(q=q, k=k, v=keys)
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
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        # Image tokens attend to each prompt's tokens: from here on the image side is per prompt.
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


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
