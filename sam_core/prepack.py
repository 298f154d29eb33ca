"""oneDNN-prepacked linears for the image encoder on CPU (inference only), with GELU fused into the
MLP's first linear.

``torch.ops.mkldnn._reorder_linear_weight`` stores a weight once in the blocked layout oneDNN's
matmul reads (plain ``F.linear`` re-packs it on every call), and ``_linear_pointwise`` applies the
activation to the float32 accumulator before rounding to the output dtype (one rounding instead of
two in bf16, and no separate pass over the 4x-wide MLP activations). These are the same kernels
inductor's CPU freezing pass emits, used without ``torch.compile``. Measured on a 2-core AVX512-BF16
EPYC (``benchmarks/results/perf_ideas.json``): a few percent per ViT-B block in bf16.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PackedLinear", "prepack_available", "prepack_encoder"]


def prepack_available() -> bool:
    """True when this torch build has oneDNN's prepacked linear (CPU builds with mkldnn)."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(
            torch.backends.mkldnn.is_available() and ops._reorder_linear_weight and ops._linear_pointwise
        )
    except (AttributeError, RuntimeError):
        return False


class PackedLinear(nn.Module):
    """``act(x @ W^T + b)`` with ``W`` prepacked for oneDNN: ... x in_features -> ... x out_features.

    Inference only: the packed weight is not a parameter (no gradient, not moved by ``.to()``: set the
    dtype before packing). ``state_dict`` still holds ``weight`` in ``nn.Linear``'s layout (unpacked
    exactly), and loading one re-packs it, so checkpoints round-trip.
    """

    def __init__(self, linear: nn.Linear, *, activation: str = "none") -> None:
        super().__init__()
        if activation not in ("none", "gelu"):
            raise ValueError(f"activation must be 'none' or 'gelu', got {activation!r}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation = activation
        self.dtype = linear.weight.dtype
        # An opaque oneDNN tensor: a plain attribute, so .to()/state_dict()/copies leave it alone.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype or (self.bias is not None and self.bias.dtype != self.dtype):
            raise RuntimeError(
                f"PackedLinear was packed in {self.dtype} but runs on {x.dtype} inputs/bias "
                f"{None if self.bias is None else self.bias.dtype}; set the model's dtype before prepacking"
            )
        *lead, C = x.shape
        flat = x.reshape(-1, C)  # N x in_features
        # GELU's algorithm argument "none" = exact erf GELU, as nn.GELU(); "" = no argument.
        out = torch.ops.mkldnn._linear_pointwise(
            flat,
            self.packed_weight,
            self.bias,
            self.activation,
            [],
            "none" if self.activation == "gelu" else "",
        )
        return out.reshape(*lead, self.out_features)  # ... x out_features

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        """``weight`` in the plain ``nn.Linear`` layout (unpacked exactly), so checkpoints stay loadable."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.packed_weight.to_dense()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        weight = state_dict.pop(prefix + "weight", None)
        if weight is not None:
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.to(self.dtype), None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


def prepack_encoder(encoder: nn.Module) -> int:
    """Replace a SAM ViT's (``ImageEncoderViT``) qkv/proj/lin1(+GELU)/lin2 by ``PackedLinear`` in
    place; returns how many linears were packed.

    Only blocks whose MLP activation is exactly ``nn.GELU()`` (erf) get the fused GELU. Returns 0 and
    changes nothing when the CPU build lacks the ops or the encoder is not on the CPU.
    """
    from .image_encoder import ImageEncoderViT

    if not isinstance(encoder, ImageEncoderViT) or not prepack_available():  # Hiera, TinyViT: as they are
        return 0
    if any(p.device.type != "cpu" for p in encoder.parameters()):
        return 0
    packed = 0
    for block in encoder.blocks:
        attn, mlp = block.attn, block.mlp
        attn.qkv, attn.proj = PackedLinear(attn.qkv), PackedLinear(attn.proj)
        if type(mlp.act) is nn.GELU and mlp.act.approximate == "none":
            mlp.lin1, mlp.act = PackedLinear(mlp.lin1, activation="gelu"), nn.Identity()
        else:
            mlp.lin1 = PackedLinear(mlp.lin1)
        mlp.lin2 = PackedLinear(mlp.lin2)
        packed += 4
    return packed
