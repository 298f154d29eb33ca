"""SAM 2's prompt encoder: SAM 1's (same parameters), with SAM 2's token layout.

Adapted from Meta's sam2/modeling/sam/prompt_encoder.py and sam2_image_predictor.py (Apache-2.0).
Meta's image predictor passes a box as two points labelled 2 and 3 ahead of the clicks, and the
prompt encoder then always appends one "not a point" token. So the sparse tokens are
[box corners, points, padding] whenever there is a box or a point (SAM 1 pads only without a box),
and none for a mask-only prompt.
"""

from __future__ import annotations

import torch

from ..prompt_encoder import PromptEncoder

__all__ = ["Sam2PromptEncoder"]


class Sam2PromptEncoder(PromptEncoder):
    """Point labels: 1 foreground, 0 background, -1 padding, 2 / 3 box top-left / bottom-right."""

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """points: B x N x 2 (x, y input frame), labels: B x N -> B x N x embed_dim (never padded here)."""
        emb = super()._embed_points(points, labels, pad=False)
        labels = labels[..., None]  # B x N x 1
        emb = torch.where(labels == 2, emb + self.point_embeddings[2].weight, emb)
        return torch.where(labels == 3, emb + self.point_embeddings[3].weight, emb)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Args:
            points: (coords B x N x 2, labels B x N) in the input frame, or None.
            boxes: B x 4 xyxy in the input frame, or None.
            masks: B x 1 x 4h x 4w mask logits, or None.

        Returns:
            sparse: B x T x embed_dim ([box corners, points, one padding token]; T = 0 without
            points and boxes). dense: B x embed_dim x h x w (a stride-0 view without a mask prompt).
        """
        bs = self._get_batch_size(points, boxes, masks)
        if boxes is not None and points is not None and points[0].shape[0] != boxes.shape[0]:
            bs = max(bs, boxes.shape[0])
        parts = []
        if boxes is not None:
            parts.append(self._embed_boxes(boxes).expand(bs, -1, -1))  # B x 2 x C
        if points is not None:
            parts.append(self._embed_points(*points, pad=False).expand(bs, -1, -1))  # B x N x C
        if parts:
            parts.append(self.not_a_point_embed.weight.expand(bs, 1, -1))  # B x 1 x C
            sparse = torch.cat(parts, dim=1)
        else:
            sparse = self.no_mask_embed.weight.new_empty((bs, 0, self.embed_dim))
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)  # B x C x h x w view
        return sparse, dense
