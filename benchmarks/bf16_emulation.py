"""Accuracy of bf16 on a CPU that cannot run it fast: emulate native bf16 matrix units in float32.

Native bf16 hardware (AVX512-BF16, AMX, tensor cores) multiplies bf16-rounded inputs and accumulates
in float32, then autocast stores the result as bf16. ``Bf16MatmulEmulation`` does exactly that
around every matrix-multiply-like op (linear, conv, matmul/bmm/einsum, SDPA): inputs rounded to bf16
and back, the op in float32, the result rounded to bf16 and back. Elementwise ops and norms stay
float32, as under ``torch.autocast``. The timing of such a run means nothing; its outputs show what
bf16 would do to the accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["Bf16MatmulEmulation"]

_MATMUL_OPS = {
    F.linear,
    F.conv2d,
    F.conv_transpose2d,
    F.scaled_dot_product_attention,
    torch.matmul,
    torch.bmm,
    torch.einsum,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.bmm,
}


def _round(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
        return value.to(torch.bfloat16).to(torch.float32)
    if isinstance(value, (list, tuple)):
        return type(value)(_round(v) for v in value)
    return value


class Bf16MatmulEmulation(TorchFunctionMode):
    """``with Bf16MatmulEmulation(): model(x)`` -- float32 speed, bf16-autocast numerics for matmuls."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _MATMUL_OPS:
            return func(*args, **kwargs)
        out = func(*_round(args), **{k: _round(v) for k, v in kwargs.items()})
        return _round(out)
