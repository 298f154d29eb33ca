"""The one place that picks a device (cuda > mps > cpu) and a dtype (the ``auto`` precision policy).

Precision policy (``resolve_dtype("auto", device)``): bfloat16 where the hardware multiplies it
natively -- CUDA GPUs with bf16, CPUs with AVX512_BF16 or AMX-BF16 -- and float32 everywhere else.
Never float16 on a CPU. CPUs with only AVX-512 BW/VL (Skylake to Ice Lake servers) *emulate* bf16
through oneDNN and run it several times slower than float32, so they get float32.
"""

from __future__ import annotations

import os

import torch

__all__ = ["SUPPORTED_DTYPES", "cpu_has_native_bf16", "resolve_device", "resolve_dtype"]

SUPPORTED_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# Set to 0 to make ``auto`` treat the CPU as having no native bf16 (tests, A/B runs); 1 forces it on.
NATIVE_BF16_ENV = "SAM_CORE_NATIVE_BF16"


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


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX512_BF16 or AMX tiles).

    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: that is true on any AVX-512 BW/VL CPU, where
    oneDNN emulates bf16. ``SAM_CORE_NATIVE_BF16=0|1`` overrides the probe.
    """
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: be safe, stay in float32
        return False


def resolve_dtype(
    dtype: str | torch.dtype | None = None, device: str | torch.device | None = None
) -> torch.dtype:
    """``None`` -> float32; ``torch.bfloat16``/``"bf16"``/``"float16"``/... -> that dtype;
    ``"auto"`` -> the precision policy above for ``device`` (None: the CPU).

    Only float32 (default, numerically Meta's model), bfloat16 and float16 are supported.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in SUPPORTED_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() == "auto":
        return _auto_dtype(torch.device("cpu") if device is None else torch.device(device))
    if isinstance(dtype, str) and dtype.lower() in SUPPORTED_DTYPES:
        return SUPPORTED_DTYPES[dtype.lower()]
    raise ValueError(
        f"unsupported dtype {dtype!r}; use 'auto', torch.float32 (default), torch.bfloat16 or torch.float16"
    )


def _auto_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32
