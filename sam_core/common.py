"""Small building blocks shared by the encoder and decoder (Meta's ``modeling/common.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d", "MLPBlock", "PromptableModel"]


class MLPBlock(nn.Module):
    """``lin2(act(lin1(x)))`` over the last dimension: ... x D -> ... x D."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a B x C x H x W tensor (biased variance, eps 1e-6).

    Same math as Meta's hand-written version; it runs through ``F.layer_norm`` so that low-precision
    inputs get its float32 accumulation.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # B x H x W x C
        x = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # B x C x H x W


class PromptableModel(nn.Module):
    """What SAM 1 and SAM 2 share around their modules: precision and placement.

    Subclasses have ``prompt_encoder.pe_layer``, ``mask_decoder.iou_token`` and ``reset_pixel_stats()``.
    """

    def set_dtype(self, dtype: torch.dtype) -> PromptableModel:
        """Run encoder and decoder in ``dtype``; the pixel statistics and the prompt encoder's random
        Fourier matrix stay float32 (a plain ``.to(dtype)`` also works but rounds those constants)."""
        pe_layer = self.prompt_encoder.pe_layer
        gaussian = pe_layer.positional_encoding_gaussian_matrix.detach().float().clone()
        self.to(dtype=dtype)
        pe_layer.positional_encoding_gaussian_matrix = gaussian
        self.reset_pixel_stats()
        return self

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype the encoder and decoder run in (float32, bfloat16 or float16)."""
        return self.mask_decoder.iou_token.weight.dtype
