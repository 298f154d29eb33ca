"""SAM's prompt encoder: points, boxes and a dense mask prompt -> sparse tokens + dense embedding.

Adapted from Meta's segment_anything/modeling/prompt_encoder.py (Apache-2.0); same parameter names.
Coordinates are in the model's input frame (pixels of the resized, padded image_size square).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d

__all__ = ["PromptEncoder", "PositionEmbeddingRandom"]


class PromptEncoder(nn.Module):
    """Embeds prompts for the mask decoder.

    Point labels: 1 = foreground, 0 = background, -1 = "not a point" (padding).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # background point, foreground point, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        # 4x downscaling of the low-res mask prompt to the embedding grid, then to embed_dim channels.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @property
    def _dtype(self) -> torch.dtype:
        return self.no_mask_embed.weight.dtype

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of every embedding-grid cell: 1 x embed_dim x h x w (model dtype)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0).to(self._dtype)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """points: B x N x 2 (x, y input frame), labels: B x N -> B x N(+1) x embed_dim."""
        points = points + 0.5  # shift to the centre of the pixel
        if pad:  # without a box, a "not a point" token keeps the token count Meta trained with
            padding_point = torch.zeros((points.shape[0], 1, 2), device=points.device, dtype=points.dtype)
            padding_label = -torch.ones((labels.shape[0], 1), device=labels.device, dtype=labels.dtype)
            points = torch.cat([points, padding_point], dim=1)  # B x N+1 x 2
            labels = torch.cat([labels, padding_label], dim=1)  # B x N+1
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size).to(self._dtype)  # B x N x C
        labels = labels[..., None]  # B x N x 1
        emb = torch.where(labels == -1, self.not_a_point_embed.weight, emb)
        emb = torch.where(labels == 0, emb + self.point_embeddings[0].weight, emb)
        emb = torch.where(labels == 1, emb + self.point_embeddings[1].weight, emb)
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes: B x 4 xyxy (input frame) -> B x 2 x embed_dim (two corner tokens)."""
        boxes = boxes + 0.5  # shift to the centre of the pixel
        coords = boxes.reshape(-1, 2, 2)  # B x 2 corners x (x, y)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size).to(self._dtype)  # B x 2 x C
        corners = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])  # 2 x C
        return emb + corners

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """masks: B x 1 x 4h x 4w logits -> B x embed_dim x h x w."""
        return self.mask_downscaling(masks.to(self._dtype))

    @staticmethod
    def _get_batch_size(
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

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
            sparse: B x T x embed_dim (points first, then the two box corners).
            dense: B x embed_dim x h x w. Without a mask prompt this is the learnt no-mask embedding
            as a stride-0 ``expand`` view, so the decoder can keep it at batch 1.
        """
        bs = self._get_batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device, dtype=self._dtype)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)  # B x C x h x w view
        return sparse, dense


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of (x, y) in [0, 1]^2: ``[sin(2 pi p G), cos(2 pi p G)]``, p = 2 xy - 1.

    Always evaluated in float32: in bfloat16 the phases (up to ~20 rad) would be off by ~0.1 rad.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: ... x 2 in [0, 1] -> ... x 2*num_pos_feats (float32)."""
        coords = 2 * coords.float() - 1
        coords = coords @ self.positional_encoding_gaussian_matrix.float()  # ... x num_pos_feats
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an h x w grid: C x h x w (float32)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h  # h x w, cell centres
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))  # h x w x C
        return pe.permute(2, 0, 1)  # C x h x w

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """coords: B x N x 2 pixels (x, y) of an image_size = (H, W) frame -> B x N x C (float32)."""
        coords = coords_input.float()
        size_wh = torch.tensor([float(image_size[1]), float(image_size[0])], device=coords.device)
        return self._pe_encoding(coords / size_wh)
