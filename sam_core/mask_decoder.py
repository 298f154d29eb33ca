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

# Prompts decoded together inside one ``MaskDecoder.forward`` call (see there).
_PROMPT_GROUP = 8
# Output pixels per chunk of the upscaling (``_upscale_and_mask``): ~2 MB of intermediates.
_UPSCALE_CHUNK = 16384


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
        B = sparse_prompt_embeddings.shape[0]
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        masks, ious = [], []
        # Prompts go through in groups: per-prompt activations are 4h*w*C floats and more, so groups
        # bound the peak for hundreds of boxes; 8 was fastest of 1/2/4/8/16/32 on a 2-core CPU.
        for start in range(0, B, _PROMPT_GROUP):
            group = slice(start, start + _PROMPT_GROUP)
            group_masks, group_iou = self.predict_masks(
                image_embeddings=_group_rows(image_embeddings, group, B),
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse_prompt_embeddings[group],
                dense_prompt_embeddings=_group_rows(dense_prompt_embeddings, group, B),
                mask_tokens=mask_slice,
            )
            masks.append(group_masks.float())
            ious.append(group_iou[:, mask_slice].float())
        if len(masks) == 1:
            return masks[0], ious[0]
        return torch.cat(masks), torch.cat(ious)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        mask_tokens: slice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x M x 4h x 4w masks, B x num_mask_tokens IoU) in the model dtype; M = the mask tokens
        selected by ``mask_tokens`` (all by default): unselected masks are never computed."""
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

        selected = range(self.num_mask_tokens)[mask_tokens or slice(None)]
        # the final attention runs for the IoU token and the selected mask tokens only: with
        # multimask off that is 2 of the 1 + 4 + prompt tokens
        final = slice(0, 1 + selected.stop) if selected.step == 1 else None
        # hs: B x T' x C (T' = final's tokens), src: B x hw x C
        hs, src = self.transformer(src, image_pe.to(dtype), tokens, final_tokens=final)
        iou_token_out = hs[:, 0, :]  # B x C
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]  # B x (<=M) x C, token i at row i
        src = src.expand(B, -1, -1)  # no-op after any block; covers a 0-block transformer
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in selected], dim=1
        )  # B x M x C/8
        masks = self._upscale_and_mask(src, hyper_in, h, w)  # B x M x 4h x 4w
        iou_pred = self.iou_prediction_head(iou_token_out)  # B x M
        return masks, iou_pred

    def _upscale_and_mask(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``output_upscaling`` then the hypernetwork dot product, as two per-pixel matrix products.

        src: B x hw x C image tokens; hyper_in: B x M x C/8 -> B x M x 4h x 4w mask logits.
        A 2x2 stride-2 transposed conv maps each input pixel to its own 2x2 block of output pixels, so
        it is one (pixels x C) @ (C x 2*2*C_out) product; LayerNorm2d and the activations are
        per pixel, so the pixels can stay in block order (rows of 4 sub-pixels) until the M masks are
        formed, and only those small masks are put back in raster order. Same results as the
        ``nn.Sequential`` (which stays the source of the weights).
        """
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        B, hw, C = src.shape
        M = hyper_in.shape[1]
        c1, c2 = conv1.out_channels, conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(C, 4 * c1)  # C x c1 x 2 x 2 -> C x (di, dj, c1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # c1 x (di2, dj2, c2)
        b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(4)
        masks = src.new_empty(B, hw, 16, M)  # block order: (pixel i, j) x (di, dj, di2, dj2) x M
        # Pixels go through in chunks whose intermediates (16x the chunk's rows) stay in cache.
        chunk = max(1, _UPSCALE_CHUNK // 16)
        for b in range(B):
            # The 4 sub-pixels' dot products with the M hypernetwork vectors as ONE product with a
            # block-diagonal matrix: (4P x 4*c2) @ (4*c2 x 4*M), instead of (16P x c2) @ (c2 x M). Same
            # sums (the extra terms are exact zeros), but a 4x wider output: with M = 1 the narrow
            # form is a matrix-vector product, which for bf16 on CPU ran ~10x slower than this.
            hyper_bd = torch.block_diag(*[hyper_in[b].transpose(0, 1)] * 4)  # 4*(C/8) x 4*M
            for p in range(0, hw, chunk):
                x = torch.addmm(b1, src[b, p : p + chunk], w1)  # P x 4*c1
                x = act1(F.layer_norm(x.view(-1, c1), (c1,), norm.weight, norm.bias, norm.eps))  # 4P x c1
                y = _gelu_(torch.addmm(b2, x, w2), act2)  # 4P x 4*c2
                # P x 16 x M block of masks viewed as 4P x 4*M: row (pixel, di, dj), column (di2, dj2, m)
                torch.mm(y, hyper_bd, out=masks[b, p : p + chunk].view(-1, 4 * M))
        # row (i, j, di, dj, di2, dj2) is pixel (4i + 2di + di2, 4j + 2dj + dj2)
        # B x hw x 16 x M -> B x M x h x 2 x 2 x w x 2 x 2 -> B x M x 4h x 4w
        masks = masks.view(B, h, w, 2, 2, 2, 2, M).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(B, M, 4 * h, 4 * w)


def _gelu_(y: torch.Tensor, act: nn.Module) -> torch.Tensor:
    """``act(y)``, in place for an exact-erf/tanh ``nn.GELU`` (saves a 4h*w*C/2-float buffer per prompt)."""
    if isinstance(act, nn.GELU) and not (torch.is_grad_enabled() and y.requires_grad):
        return torch.ops.aten.gelu_(y, approximate=act.approximate)
    return act(y)


def _group_rows(t: torch.Tensor, group: slice, batch: int) -> torch.Tensor:
    """The rows of a per-prompt (batch x ...) tensor for ``group``; a shared (batch 1) one unchanged."""
    return t[group] if t.shape[0] == batch and batch > 1 else t


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
