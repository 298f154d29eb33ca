"""SAM-HQ's mask decoder: SAM's decoder plus an HQ output token and an early-feature mask head.

Adapted from SysCV/sam-hq ``segment_anything/modeling/mask_decoder_hq.py`` (Apache-2.0); same
parameter names (``hf_token``, ``hf_mlp``, ``compress_vit_feat``, ``embedding_encoder``,
``embedding_maskfeature``), so SysCV's ``sam_hq_vit_*.pth`` load unchanged.

The HQ features (the final embedding and the encoder's early features, both upscaled 4x and added)
depend on the image only: ``hq_features`` computes them once per image and ``forward`` reuses them
for every prompt. As in SAM's decoder, all prompts go through one call against ONE shared embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm2d
from .mask_decoder import (
    _PROMPT_GROUP,
    MLP,
    MaskDecoder,
    _collapse_broadcast_batch,
    _gelu_,
    _group_rows,
)
from .transformer import TwoWayTransformer

__all__ = ["MaskDecoderHQ"]


class MaskDecoderHQ(MaskDecoder):
    """SAM's decoder with SysCV's HQ token; returns ONE mask and IoU per prompt (SysCV's behaviour).

    ``multimask_output=True`` picks, per prompt, the multimask output with the highest predicted IoU
    (instead of returning all three); ``hq_token_only=False`` adds the HQ token's mask logits to that
    SAM mask, ``True`` returns the HQ mask alone. The IoU is always that of the chosen SAM token.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        vit_dim: int,
    ) -> None:
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            activation=activation,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        C = transformer_dim
        self.hf_token = nn.Embedding(1, C)  # the HQ output token
        self.hf_mlp = MLP(C, C, C // 8, 3)  # its hypernetwork
        # early encoder features (vit_dim channels) -> C/8 channels at 4x the grid
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, C, kernel_size=2, stride=2),
            LayerNorm2d(C),
            nn.GELU(),
            nn.ConvTranspose2d(C, C // 8, kernel_size=2, stride=2),
        )
        # final image embedding -> C/8 channels at 4x the grid
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(C, C // 4, kernel_size=2, stride=2),
            LayerNorm2d(C // 4),
            nn.GELU(),
            nn.ConvTranspose2d(C // 4, C // 8, kernel_size=2, stride=2),
        )
        # refines SAM's upscaled mask features before the HQ features are added
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(C // 8, C // 4, kernel_size=3, padding=1),
            LayerNorm2d(C // 4),
            nn.GELU(),
            nn.Conv2d(C // 4, C // 8, kernel_size=3, padding=1),
        )

    def hq_features(self, image_embeddings: torch.Tensor, early_features: torch.Tensor) -> torch.Tensor:
        """Per-image HQ features: B x C x h x w embedding + B x h x w x Cv early -> B x C/8 x 4h x 4w."""
        dtype = self.hf_token.weight.dtype
        early = early_features.to(dtype).permute(0, 3, 1, 2)  # B x Cv x h x w
        return self.embedding_encoder(image_embeddings.to(dtype)) + self.compress_vit_feat(early)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        *,
        hq_features: torch.Tensor,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict one HQ mask per prompt.

        Args:
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings: as
                ``MaskDecoder.forward`` (one shared 1 x C x h x w embedding, or one per prompt).
            multimask_output: choose the best of the 3 multimask outputs (True) or the single-mask
                output (False) as the SAM mask.
            hq_features: ``self.hq_features(...)`` of the image: 1 (shared) or B x C/8 x 4h x 4w.
            hq_token_only: the HQ mask alone instead of SAM mask + HQ mask.

        Returns:
            masks: B x 1 x 4h x 4w float32 logits; iou_pred: B x 1 float32.
        """
        B = sparse_prompt_embeddings.shape[0]
        masks, ious = [], []
        for start in range(0, B, _PROMPT_GROUP):  # bounds the per-prompt 4h x 4w activations
            group = slice(start, start + _PROMPT_GROUP)
            group_masks, group_iou = self._predict_group(
                image_embeddings=_group_rows(image_embeddings, group, B),
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse_prompt_embeddings[group],
                dense_prompt_embeddings=_group_rows(dense_prompt_embeddings, group, B),
                hq_features=_group_rows(hq_features, group, B),
                multimask_output=multimask_output,
                hq_token_only=hq_token_only,
            )
            masks.append(group_masks.float())
            ious.append(group_iou.float())
        if len(masks) == 1:
            return masks[0], ious[0]
        return torch.cat(masks), torch.cat(ious)

    def _predict_group(
        self,
        *,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        hq_features: torch.Tensor,
        multimask_output: bool,
        hq_token_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B = sparse_prompt_embeddings.shape[0]
        M = self.num_mask_tokens  # SAM's mask tokens; the HQ token follows them
        dtype = self.iou_token.weight.dtype
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight])
        output_tokens = output_tokens.unsqueeze(0).expand(B, -1, -1)  # B x 2+M x C
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings.to(dtype)), dim=1)  # B x T x C

        image = _collapse_broadcast_batch(image_embeddings).to(dtype)
        dense = _collapse_broadcast_batch(dense_prompt_embeddings).to(dtype)
        hq_features = _collapse_broadcast_batch(hq_features).to(dtype)
        for name, t in (
            ("image_embeddings", image),
            ("dense_prompt_embeddings", dense),
            ("hq_features", hq_features),
        ):
            if t.shape[0] not in (1, B):
                raise ValueError(
                    f"{name} has batch {t.shape[0]}; expected 1 (shared) or {B} (one per prompt)"
                )
        src = image + dense  # Bs x C x h x w
        _, C, h, w = src.shape
        # hs: B x 2+M x C (the output tokens), src: B x hw x C
        hs, src = self.transformer(src, image_pe.to(dtype), tokens, final_tokens=slice(0, 2 + M))
        src = src.expand(B, -1, -1)  # covers a 0-block transformer

        iou_pred = self.iou_prediction_head(hs[:, 0])  # B x M
        candidates = slice(1, M) if multimask_output else slice(0, 1)
        iou, best = iou_pred[:, candidates].max(dim=1)  # B, B (index within candidates)
        rows = torch.arange(B, device=hs.device)

        # The image side runs channels-last (B x C x H x W with C innermost): the tokens come that way,
        # the convolutions and channel LayerNorms then need no copies, and the mask products below
        # read the features as B x HW x C views.
        grid = src.view(B, h, w, C).permute(0, 3, 1, 2)  # B x C x h x w, channels last
        up1, up_norm, up_act, up2, up_act2 = self.output_upscaling
        upscaled = _gelu_(up2(_gelu_(up_norm(up1(grid)), up_act)), up_act2)  # B x C/8 x 4h x 4w
        c8, H4, W4 = upscaled.shape[1:]
        upscaled = upscaled.contiguous(memory_format=torch.channels_last)  # no-op if already
        mf1, mf_norm, mf_act, mf2 = self.embedding_maskfeature
        upscaled_hq = mf2(_gelu_(mf_norm(mf1(upscaled)), mf_act))  # B x C/8 x 4h x 4w, channels last
        upscaled_hq += hq_features
        hyper_hq = self.hf_mlp(hs[:, 1 + M])  # B x C/8
        pixels_hq = upscaled_hq.permute(0, 2, 3, 1).reshape(B, H4 * W4, c8)  # B x HW x C/8 (a view)
        masks = torch.bmm(pixels_hq, hyper_hq.unsqueeze(2))  # B x HW x 1
        if not hq_token_only:
            first = candidates.start
            hyper = torch.stack(
                [self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(first, candidates.stop)],
                dim=1,
            )  # B x K x C/8, K candidate tokens
            hyper_sam = hyper[rows, best].unsqueeze(2)  # B x C/8 x 1: the chosen token per prompt
            pixels = upscaled.permute(0, 2, 3, 1).reshape(B, H4 * W4, c8)  # B x HW x C/8 (a view)
            masks = torch.baddbmm(masks, pixels, hyper_sam)  # B x HW x 1
        return masks.view(B, 1, H4, W4), iou.unsqueeze(1)  # B x HW x 1 -> B x 1 x 4h x 4w; B x 1
