"""Import the original packages as test-only references: MobileSAM and SysCV's SAM-HQ.

``mobile_sam`` (pip ``mobilesam-mirror``) and ``segment_anything_hq`` (pip ``segment-anything-hq``,
SysCV's official package) import torchvision (NMS and resize helpers we never call) and timm (four
small helpers for their TinyViT). torchvision is not installable here and must not become a
dependency, and timm itself imports torchvision, so when torchvision is missing this installs
minimal stand-ins for exactly those names (when torchvision or timm is missing) -- only while the
package is being imported. segment-anything-hq declares torchvision as a requirement, so the Makefile
installs it with ``--no-deps``; mobilesam-mirror declares none (the ``dev`` extra).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable

import pytest
import torch
from torch import nn


def _unused(name: str) -> Callable[..., object]:
    def fail(*args: object, **kwargs: object) -> object:
        raise RuntimeError(f"{name} is a test stand-in (torchvision is not installed)")

    return fail


def _to_2tuple(x: object) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class _DropPath(nn.Module):
    """timm's DropPath at inference: the identity (MobileSAM's vit_t uses drop_path_rate 0)."""

    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _stand_ins() -> dict[str, dict[str, object]]:
    return {
        # <package>.automatic_mask_generator / <package>.utils.transforms (never called here)
        "torchvision": {},
        "torchvision.ops": {},
        "torchvision.ops.boxes": {"batched_nms": _unused("batched_nms"), "box_area": _unused("box_area")},
        "torchvision.transforms": {},
        "torchvision.transforms.functional": {
            "resize": _unused("resize"),
            "to_pil_image": _unused("to_pil_image"),
        },
        # <package>.modeling.tiny_vit_sam's timm imports
        "timm": {},
        "timm.models": {},
        "timm.models.layers": {
            "DropPath": _DropPath,
            "to_2tuple": _to_2tuple,
            "trunc_normal_": nn.init.trunc_normal_,
        },
        "timm.models.registry": {"register_model": lambda fn: fn},
    }


PIP_NAMES = {"mobile_sam": "mobilesam-mirror", "segment_anything_hq": "segment-anything-hq"}


def import_reference(package: str) -> types.ModuleType:
    """``package`` (a ``PIP_NAMES`` key), or skip the test when it is not installed."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{PIP_NAMES[package]} (a test-only reference) is not installed: pip install -e '.[dev]'")
    real = all(importlib.util.find_spec(name) is not None for name in ("torchvision", "timm"))
    if real or package in sys.modules:
        return importlib.import_module(package)
    saved = {name: sys.modules.get(name) for name in _stand_ins()}
    try:
        for name, attrs in _stand_ins().items():
            module = types.ModuleType(name)
            module.__path__ = []  # a package, so submodule imports resolve through sys.modules
            module.__dict__.update(attrs)
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
        return importlib.import_module(package)
    finally:
        # the package keeps its references; the stand-ins leave sys.modules (transformers probes
        # for torchvision with find_spec and must keep finding none)
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@torch.no_grad()
def randomize_reference_(model: nn.Module, seed: int) -> None:
    """Non-trivial random weights and BatchNorm statistics for a reference SAM (then call .eval())."""
    gen = torch.Generator().manual_seed(seed)
    norms = {
        id(m.weight)
        for m in model.modules()
        if "Norm" in type(m).__name__ and isinstance(getattr(m, "weight", None), torch.Tensor)
    }
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen)
        if id(param) in norms:
            param.copy_(1 + 0.1 * noise)
        elif name.endswith("bias") or "attention_biases" in name:
            param.copy_(0.1 * noise if name.endswith("bias") else 0.5 * noise)
        elif param.ndim >= 2:
            param.copy_(noise / param[0].numel() ** 0.5)
        else:
            param.copy_(noise)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.copy_(0.1 * torch.randn(buffer.shape, generator=gen))
        elif name.endswith("running_var"):
            buffer.copy_(1 + 0.2 * torch.rand(buffer.shape, generator=gen))
        elif name.endswith("positional_encoding_gaussian_matrix"):  # a buffer drawn from the global RNG
            buffer.copy_(torch.randn(buffer.shape, generator=gen))
