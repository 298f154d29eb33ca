"""Grounding DINO encoder layer with its feed-forward in token chunks (part of ``fast_path.py``).

transformers runs fc1 -> ReLU -> fc2 -> residual -> LayerNorm over all ~22k image tokens at once, which
materialises a 22k x 2048 activation (180 MB) and walks it three times. Every step is per token, so
running them on row chunks whose hidden activations stay in cache gives the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["chunked_deformable_layer_forward", "feed_forward_in_chunks"]

# Tokens per chunk of the encoder feed-forward: the chunk's hidden activations are ~8 MB.
_FFN_CHUNK = 1024


def chunked_deformable_layer_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    position_embeddings: torch.Tensor | None = None,
    reference_points: torch.Tensor | None = None,
    spatial_shapes: torch.Tensor | None = None,
    spatial_shapes_list: list[tuple[int, int]] | None = None,
    level_start_index: torch.Tensor | None = None,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``GroundingDinoDeformableLayer.forward`` (inference) with the feed-forward in token chunks.

    Bound to a module instance (``types.MethodType``); hidden_states: B x N x C -> (B x N x C,
    attention weights as the original returns them).
    """
    if self.training:
        return type(self).forward(
            self,
            hidden_states,
            attention_mask,
            position_embeddings,
            reference_points,
            spatial_shapes,
            spatial_shapes_list,
            level_start_index,
            output_attentions,
        )
    attn_out, attn_weights = self.self_attn(
        hidden_states=hidden_states,
        attention_mask=attention_mask,
        encoder_hidden_states=hidden_states,
        encoder_attention_mask=attention_mask,
        position_embeddings=position_embeddings,
        reference_points=reference_points,
        spatial_shapes=spatial_shapes,
        spatial_shapes_list=spatial_shapes_list,
        level_start_index=level_start_index,
        output_attentions=output_attentions,
    )
    hidden_states = self.self_attn_layer_norm(hidden_states + attn_out)  # B x N x C
    return feed_forward_in_chunks(
        hidden_states, self.fc1, self.activation_fn, self.fc2, self.final_layer_norm
    ), attn_weights


def feed_forward_in_chunks(
    x: torch.Tensor, fc1: nn.Linear, act: nn.Module, fc2: nn.Linear, norm: nn.LayerNorm
) -> torch.Tensor:
    """``norm(x + fc2(act(fc1(x))))`` for B x N x C ``x``, ``_FFN_CHUNK`` tokens at a time."""
    plain = type(fc1) is nn.Linear and type(fc2) is nn.Linear  # not int8-quantised ones
    if not plain or (torch.is_grad_enabled() and x.requires_grad):
        return norm(x + fc2(act(fc1(x))))
    B, N, C = x.shape
    rows = x.reshape(B * N, C)  # B*N x C
    out = torch.empty_like(rows)
    w1, w2 = fc1.weight.t(), fc2.weight.t()  # C x F, F x C
    in_place = type(act) is nn.ReLU
    for start in range(0, B * N, _FFN_CHUNK):
        chunk = rows[start : start + _FFN_CHUNK]  # n x C
        hidden = torch.addmm(fc1.bias, chunk, w1)  # n x F
        hidden = hidden.relu_() if in_place else act(hidden)
        y = torch.addmm(chunk, hidden, w2)  # n x C: residual + fc2 without its bias
        y += fc2.bias
        out[start : start + len(chunk)] = F.layer_norm(
            y, norm.normalized_shape, norm.weight, norm.bias, norm.eps
        )
    return out.view(B, N, C)
