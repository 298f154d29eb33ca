"""SAM's mask decoder: output tokens + prompt tokens + image embedding -> mask logits and IoU scores.

Adapted from Meta's segment_anything/modeling/mask_decoder.py (Apache-2.0); same parameter names.
One call decodes B prompts against ONE image embedding without copying that embedding B times
(see ``transformer.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .transformer import TwoWayTransformer

__all__ = ["MaskDecoder", "MLP"]


class MaskDecoder(nn.Module):
    """Predicts ``num_multimask_outputs`` masks (or the single-mask output) and their IoU per prompt."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1  # token 0: single-mask output
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        # 4x upscaling of the image tokens to transformer_dim // 8 channels.
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        # Hypernetworks: each mask token -> weights of a 1x1 "conv" over the upscaled features.
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts.

        Args:
            image_embeddings: 1 x C x h x w (one image for all prompts) or B x C x h x w.
            image_pe: 1 x C x h x w positional encoding (``PromptEncoder.get_dense_pe()``).
            sparse_prompt_embeddings: B x N x C point/box tokens.
            dense_prompt_embeddings: B x C x h x w (or 1 x ..., or a stride-0 expand view of one).
            multimask_output: True -> the 3 multimask outputs, False -> the single-mask output.

        Returns:
            masks: B x M x 4h x 4w float32 logits; iou_pred: B x M float32 (M = 3 or 1).
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
        )
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice].float(), iou_pred[:, mask_slice].float()

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens: (B x num_mask_tokens x 4h x 4w, B x num_mask_tokens), model dtype."""
        B = sparse_prompt_embeddings.shape[0]
        dtype = self.iou_token.weight.dtype
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)  # 1+M x C
        output_tokens = output_tokens.unsqueeze(0).expand(B, -1, -1)  # B x 1+M x C
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings.to(dtype)), dim=1)  # B x T x C

        image = _collapse_broadcast_batch(image_embeddings).to(dtype)
        dense = _collapse_broadcast_batch(dense_prompt_embeddings).to(dtype)
        for name, t in (("image_embeddings", image), ("dense_prompt_embeddings", dense)):
            if t.shape[0] not in (1, B):
                raise ValueError(
                    f"{name} has batch {t.shape[0]}; expected 1 (shared) or {B} (one per prompt)"
                )
        src = image + dense  # Bs x C x h x w, Bs = 1 unless a per-prompt mask or image was given
        _, C, h, w = src.shape

        hs, src = self.transformer(src, image_pe.to(dtype), tokens)  # B x T x C, B x hw x C
        iou_token_out = hs[:, 0, :]  # B x C
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]  # B x M x C

        src = src.expand(B, -1, -1)  # no-op after any block; covers a 0-block transformer
        src = src.transpose(1, 2).reshape(B, C, h, w)  # B x hw x C -> B x C x h x w
        upscaled = self.output_upscaling(src)  # B x C/8 x 4h x 4w
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # B x M x C/8
        b, c, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, uh * uw)).reshape(b, -1, uh, uw)  # B x M x 4h x 4w
        iou_pred = self.iou_prediction_head(iou_token_out)  # B x M
        return masks, iou_pred


def _collapse_broadcast_batch(t: torch.Tensor) -> torch.Tensor:
    """A tensor whose batch dim is a stride-0 ``expand`` of one item -> that item (batch 1), no copy."""
    if t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1]
    return t


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (Meta's ``layers.{i}`` naming)."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip([input_dim] + dims, dims + [output_dim], strict=True)
        )
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return torch.sigmoid(x) if self.sigmoid_output else x
