"""SAM 2's mask decoder: SAM 1's, plus high-resolution skips, an object-score head and the
stability fallback for single-mask output.

Adapted from Meta's sam2/modeling/sam/mask_decoder.py (Apache-2.0), with the settings Meta's image
models use (``use_high_res_features``, ``pred_obj_scores`` with an MLP head, sigmoid IoU head,
``dynamic_multimask_via_stability``). Output tokens are [object score, IoU, 4 mask tokens]. As in
SAM 1 here, B prompts decode against ONE image embedding and ONE set of high-resolution features,
never copied per prompt (Meta and transformers ``repeat_interleave`` all three).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..mask_decoder import (
    _PROMPT_GROUP,
    _UPSCALE_CHUNK,
    MLP,
    MaskDecoder,
    _collapse_broadcast_batch,
    _gelu_,
    _group_rows,
)
from ..transformer import TwoWayTransformer

__all__ = ["Sam2MaskDecoder", "Sam2DecoderOutput"]


@dataclass(frozen=True)
class Sam2DecoderOutput:
    """masks: B x M x 4h x 4w float32 logits; iou_predictions: B x M float32 (sigmoid, 0..1);
    object_score_logits: B x 1 float32 (> 0: an object is present); stability_fallback: B bool,
    True where single-mask output was replaced by the best multimask output (all False otherwise)."""

    masks: torch.Tensor
    iou_predictions: torch.Tensor
    object_score_logits: torch.Tensor
    stability_fallback: torch.Tensor


class Sam2MaskDecoder(MaskDecoder):
    """Predicts masks, IoU and an object score per prompt from the stride-16 embedding plus the
    stride-8 and stride-4 features (already projected by ``conv_s1`` / ``conv_s0``)."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        dynamic_multimask_via_stability: bool = True,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
    ) -> None:
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        self.iou_prediction_head.sigmoid_output = True
        self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3)
        # 1 x 1 projections of the stride-4 / stride-8 features to the upscaling widths; applied once
        # per image by the encoder (``Sam2.encode_image``), not per prompt.
        self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        high_res_features: tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masks B x M x 4h x 4w, iou_predictions B x M), float32; see ``decode``."""
        out = self.decode(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            multimask_output=multimask_output,
            high_res_features=high_res_features,
        )
        return out.masks, out.iou_predictions

    def decode(
        self,
        *,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        high_res_features: tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor],
    ) -> Sam2DecoderOutput:
        """Predict masks for B prompts.

        Args:
            image_embeddings: 1 x C x h x w (shared by all prompts) or B x C x h x w.
            image_pe: 1 x C x h x w. sparse_prompt_embeddings: B x N x C.
            dense_prompt_embeddings: B x C x h x w (or 1 x ..., or a stride-0 expand view).
            multimask_output: the 3 multimask outputs; else the single-mask output (with the
                stability fallback when ``dynamic_multimask_via_stability``).
            high_res_features: (1 x C/8 x 4h x 4w, 1 x C/4 x 2h x 2w), the projected stride-4 and
                stride-8 features (batch 1 or B).
        """
        B = sparse_prompt_embeddings.shape[0]
        dynamic = not multimask_output and self.dynamic_multimask_via_stability
        tokens = slice(1, None) if multimask_output else (slice(None) if dynamic else slice(0, 1))
        masks, ious, objs = [], [], []
        for start in range(0, B, _PROMPT_GROUP):  # bounds the per-prompt activations (see MaskDecoder)
            group = slice(start, start + _PROMPT_GROUP)
            m, iou, obj = self.predict_masks(
                image_embeddings=_group_rows(image_embeddings, group, B),
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse_prompt_embeddings[group],
                dense_prompt_embeddings=_group_rows(dense_prompt_embeddings, group, B),
                high_res_features=[_group_rows(f, group, B) for f in high_res_features],
                mask_tokens=tokens,
            )
            masks.append(m.float())
            ious.append(iou[:, tokens].float())
            objs.append(obj.float())
        masks_t, iou_t, obj_t = (torch.cat(t) if len(t) > 1 else t[0] for t in (masks, ious, objs))
        fallback = torch.zeros(B, dtype=torch.bool, device=masks_t.device)
        if dynamic:
            masks_t, iou_t, fallback = self._dynamic_multimask_via_stability(masks_t, iou_t)
        return Sam2DecoderOutput(masks_t, iou_t, obj_t, fallback)

    def predict_masks(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res_features: list[torch.Tensor],
        mask_tokens: slice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B x M x 4h x 4w masks, B x num_mask_tokens IoU, B x 1 object-score logits), model dtype;
        M = the mask tokens selected by ``mask_tokens`` (all by default)."""
        B = sparse_prompt_embeddings.shape[0]
        dtype = self.iou_token.weight.dtype
        output_tokens = torch.cat(
            [self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0
        )  # 2+M x C
        output_tokens = output_tokens.unsqueeze(0).expand(B, -1, -1)  # B x 2+M x C
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings.to(dtype)), dim=1)  # B x T x C

        image = _collapse_broadcast_batch(image_embeddings).to(dtype)
        dense = _collapse_broadcast_batch(dense_prompt_embeddings).to(dtype)
        for name, t in (("image_embeddings", image), ("dense_prompt_embeddings", dense)):
            if t.shape[0] not in (1, B):
                raise ValueError(
                    f"{name} has batch {t.shape[0]}; expected 1 (shared) or {B} (one per prompt)"
                )
        src = image + dense  # Bs x C x h x w
        _, C, h, w = src.shape

        selected = range(self.num_mask_tokens)[mask_tokens or slice(None)]
        final = slice(0, 2 + selected.stop)  # object score, IoU and mask tokens up to the last selected
        hs, src = self.transformer(
            src, image_pe.to(dtype), tokens, final_tokens=final
        )  # B x T' x C, B x hw x C
        mask_tokens_out = hs[:, 2 : 2 + self.num_mask_tokens, :]  # token i at row i
        src = src.expand(B, -1, -1)
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in selected], dim=1
        )  # B x M x C/8
        masks = self._upscale_and_mask_high_res(src, hyper_in, h, w, high_res_features)
        iou_pred = self.iou_prediction_head(hs[:, 1, :])  # B x num_mask_tokens
        object_score_logits = self.pred_obj_score_head(hs[:, 0, :])  # B x 1
        return masks, iou_pred, object_score_logits

    def _upscale_and_mask_high_res(
        self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int, high_res: list[torch.Tensor]
    ) -> torch.Tensor:
        """SAM 1's per-pixel upscaling (``MaskDecoder._upscale_and_mask``) with the skips:
        act(LN(dc1(src) + feat_s1)), then act(dc2(.) + feat_s0), then the hypernetwork product.

        The skip features are put in the same block order as the transposed-conv outputs (rows:
        coarse pixel (i, j) [and sub-pixel (di, dj)], columns: sub-pixel block x channel) once per
        call, with the conv biases folded in. src: B x hw x C -> B x M x 4h x 4w.
        """
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        B, hw, C = src.shape
        M = hyper_in.shape[1]
        c1, c2 = conv1.out_channels, conv2.out_channels
        feat_s0, feat_s1 = high_res
        Bf = feat_s1.shape[0]
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(C, 4 * c1)  # C x (di, dj, c1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # c1 x (di2, dj2, c2)
        # Bf x c1 x 2h x 2w -> Bf x (i, j) x (di, dj, c1)
        s1 = feat_s1.to(src.dtype).reshape(Bf, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)
        s1 = s1.reshape(Bf, hw, 4 * c1) + conv1.bias.repeat(4)
        # Bf x c2 x 4h x 4w -> Bf x (i, j, di, dj) x (di2, dj2, c2)
        s0 = feat_s0.to(src.dtype).reshape(Bf, c2, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
        s0 = s0.reshape(Bf, 4 * hw, 4 * c2) + conv2.bias.repeat(4)
        masks = src.new_empty(B, hw, 16, M)  # block order: (pixel i, j) x (di, dj, di2, dj2) x M
        chunk = max(1, _UPSCALE_CHUNK // 16)
        for b in range(B):
            f = b if Bf > 1 else 0
            hyper_t = hyper_in[b].transpose(0, 1)  # C/8 x M
            for p in range(0, hw, chunk):
                q = min(p + chunk, hw)
                x = torch.addmm(s1[f, p:q], src[b, p:q], w1)  # P x 4*c1
                x = act1(F.layer_norm(x.view(-1, c1), (c1,), norm.weight, norm.bias, norm.eps))  # 4P x c1
                y = _gelu_(torch.addmm(s0[f, 4 * p : 4 * q], x, w2), act2)  # 4P x 4*c2
                torch.mm(y.view(-1, c2), hyper_t, out=masks[b, p:q].view(-1, M))  # 16P x M
        # B x hw x 16 x M -> B x M x h x 2 x 2 x w x 2 x 2 -> B x M x 4h x 4w
        masks = masks.view(B, h, w, 2, 2, 2, 2, M).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(B, M, 4 * h, 4 * w)

    def _dynamic_multimask_via_stability(
        self, masks: torch.Tensor, iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """From all 4 outputs (B x 4 x H x W, B x 4): token 0's mask where it is stable, else the
        multimask output with the highest predicted IoU. Returns (B x 1 x H x W, B x 1, B fallback)."""
        B = masks.shape[0]
        best = iou[:, 1:].argmax(dim=-1)  # B
        rows = torch.arange(B, device=masks.device)
        best_masks = masks[rows, 1 + best].unsqueeze(1)  # B x 1 x H x W
        best_iou = iou[rows, 1 + best].unsqueeze(1)  # B x 1
        single = masks[:, 0].flatten(1)  # B x HW
        delta = self.dynamic_multimask_stability_delta
        area_i = (single > delta).sum(dim=-1).float()
        area_u = (single > -delta).sum(dim=-1).float()
        stability = torch.where(area_u > 0, area_i / area_u.clamp(min=1), torch.ones_like(area_u))  # B
        stable = stability >= self.dynamic_multimask_stability_thresh
        out_masks = torch.where(stable[:, None, None, None], masks[:, :1], best_masks)
        out_iou = torch.where(stable[:, None], iou[:, :1], best_iou)
        return out_masks, out_iou, ~stable
