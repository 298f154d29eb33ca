"""The one way a SAM-family model is made: random init (seeded) or strict weights, then device and dtype."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from .checkpoint import check_state_dict
from .device import resolve_device, resolve_dtype

__all__ = ["materialize"]

Model = TypeVar("Model", bound=nn.Module)


def materialize(
    build: Callable[[], Model],
    read_state: Callable[[], dict[str, torch.Tensor]] | None,
    *,
    checkpoint: str | os.PathLike | None,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    seed: int | None,
) -> Model:
    """``build()`` with random weights (``read_state`` None; ``seed`` makes them deterministic without
    touching the global RNG) or with ``read_state()``'s weights loaded strictly -- built on the meta
    device first, so no time goes into an init the weights overwrite -- then moved to ``device`` and
    cast to ``dtype`` (``resolve_dtype``: None -> float32, "auto" -> the precision policy). Eval mode."""
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    if read_state is None:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = build()
    else:
        state = read_state()
        with torch.device("meta"):
            model = build()
        check_state_dict(model, state, source=f"checkpoint {os.fspath(checkpoint)!r}")
        model = model.to_empty(device="cpu")
        model.load_state_dict(state, strict=True)
        model.reset_pixel_stats()
    model = model.to(device=target_device)
    if target_dtype != torch.float32:
        model.set_dtype(target_dtype)
    return model.eval()
