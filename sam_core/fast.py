"""Opt-in speed-ups for inference that trade a little accuracy or start-up time for speed.

The default model is already the fast exact path: SDPA with the relative-position bias as the mask,
built in row blocks into one reused buffer; fused qkv; one decoder call for all prompts with no
per-prompt embedding copies, re-associated prompt<->image attention and the upscaling as two matrix
products (``transformer.py``, ``mask_decoder.py``). On top of it, opt-in:

- ``dtype=torch.bfloat16`` / ``float16``: the whole model in reduced precision (``Sam.set_dtype``);
  worth it only where the hardware computes it natively (CUDA, CPUs with AVX512-BF16/AMX). On CPUs
  without native bf16 it is several times *slower* than float32.
- ``quantize_int8=True``: the image encoder's ``nn.Linear`` layers become dynamically quantised int8
  (weights per output channel, activations per tensor at every call); CPU, float32 only.
- ``prepack=True``: the encoder's linears prepacked for oneDNN, GELU fused (``prepack.py``); CPU,
  inference only. The pipeline (``grounded.models``) applies it on CPU by default.
- ``compile=True``: ``torch.compile`` the image encoder (inductor; the first call compiles for
  minutes on a small CPU, later processes reuse inductor's on-disk cache).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .prepack import prepack_encoder
from .sam import Sam

__all__ = ["enable_fast_path", "quantize_encoder_int8"]


def enable_fast_path(
    sam: Sam,
    *,
    dtype: torch.dtype | None = None,
    quantize_int8: bool = False,
    compile: bool = False,
    prepack: bool = False,
) -> Sam:
    """Apply the requested speed-ups to ``sam`` in place and return it.

    Args:
        sam: a built model (``build_sam``), in eval mode.
        dtype: ``None`` keeps the model's dtype; ``torch.float32``/``bfloat16``/``float16`` converts.
        quantize_int8: dynamic int8 linears in the image encoder (CPU + float32 only).
        compile: wrap the image encoder's forward in ``torch.compile``.
        prepack: oneDNN-prepacked encoder linears with fused GELU (``sam_core.prepack``; CPU, after
            ``dtype``; ignored with ``quantize_int8`` and where the ops are missing).

    Raises:
        ValueError: int8 requested for a non-CPU or non-float32 model, or an unsupported dtype.
    """
    if dtype is not None:
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        sam.set_dtype(dtype)
    if quantize_int8:
        quantize_encoder_int8(sam)
    elif prepack:
        prepack_encoder(sam.image_encoder)
    if compile:
        encoder = sam.image_encoder
        encoder.forward = torch.compile(encoder.forward, dynamic=False)
    return sam.eval()


def quantize_encoder_int8(sam: Sam) -> Sam:
    """Replace the image encoder's linears by ``torch.ao`` dynamic int8 linears (in place).

    Only the encoder: it is >95% of the compute; the decoder stays float32 (it is cheap and its
    mask logits are thresholded at 0, where small errors flip pixels).
    """
    if sam.device.type != "cpu" or sam.dtype != torch.float32:
        raise ValueError(
            f"int8 dynamic quantisation runs on CPU in float32; the model is on {sam.device} in {sam.dtype}"
        )
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao dynamic quantisation is deprecated in favour of torchao but still works in 2.x.
        warnings.simplefilter("ignore")
        quantize_dynamic(
            sam.image_encoder,
            qconfig_spec={nn.Linear: per_channel_dynamic_qconfig},
            dtype=torch.qint8,
            inplace=True,
        )
    return sam
