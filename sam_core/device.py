"""The one place that picks a device (cuda > mps > cpu) and checks a dtype."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "resolve_dtype", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> the best available device (cuda, then mps, then cpu); else that device.

    Raises ``ValueError`` when an explicitly requested accelerator is not available.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    if resolved.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device {device!r} was requested but MPS is not available; use 'cpu' or 'auto'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``None`` -> float32; ``torch.bfloat16``/``"bf16"``/``torch.float16``/... -> that dtype.

    Only float32 (default, numerically Meta's model), bfloat16 and float16 are supported.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in SUPPORTED_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in SUPPORTED_DTYPES:
        return SUPPORTED_DTYPES[dtype.lower()]
    raise ValueError(
        f"unsupported dtype {dtype!r}; use torch.float32 (default), torch.bfloat16 or torch.float16"
    )
