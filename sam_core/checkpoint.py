"""Find, read and strictly check SAM weights: Meta .pth/.safetensors, a Hugging Face folder or Hub id.

Everything is returned in Meta's key layout (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``). Files are read only with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .config import SamConfig
from .hf_format import HF_TIED_ALIASES, hf_key_to_meta, is_hf_layout, sam_config_from_hf
from .hub import HubFilesUnavailable, fetch_file, fetch_snapshot, parse_hub_file
from .tiny_vit import TINY_VIT_CLASSIFIER_KEYS

__all__ = [
    "CheckpointError",
    "load_sam_state_dict",
    "check_state_dict",
    "read_checkpoint_config",
    "resolve_checkpoint",
]

HF_FILES = ("config.json", "model.safetensors")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHOWN = 5  # offending key names listed per category


class CheckpointError(ValueError):
    """A checkpoint cannot be found, read, or does not fit the model (names the offending keys)."""


def resolve_checkpoint(checkpoint: str | os.PathLike) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) for a file, a Hugging Face folder, a Hub model id, or one
    file of a Hub repository as ``hf://OWNER/REPO/FILE`` (e.g. ``hf://dhkim2810/MobileSAM/mobile_sam.pt``)."""
    text = os.fspath(checkpoint)
    try:
        hub_file = parse_hub_file(text)
        if hub_file is not None:
            return fetch_file(*hub_file, what="SAM", local_hint="the weights file's path"), None
    except HubFilesUnavailable as err:
        raise CheckpointError(str(err)) from err
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        missing = [name for name in HF_FILES if not (path / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{path} is a folder but lacks {', '.join(missing)}; a Hugging Face SAM folder "
                f"needs {' + '.join(HF_FILES)} (e.g. from SamModel.save_pretrained)"
            )
        return path / "model.safetensors", path / "config.json"
    if path.is_file():
        return path, None
    if _HUB_ID.match(text) and path.suffix not in (".pth", ".pt", ".bin", ".safetensors"):
        return _download(text)
    raise CheckpointError(
        f"checkpoint {text!r} not found: give a Meta .pth/.safetensors file, a Hugging Face "
        "SAM folder (config.json + model.safetensors), a Hub id such as 'facebook/sam-vit-base', or "
        "hf://OWNER/REPO/FILE"
    )


def read_checkpoint_config(checkpoint: str | os.PathLike) -> SamConfig | None:
    """The SamConfig a Hugging Face checkpoint's config.json describes; None for a bare weights file."""
    _, config_path = resolve_checkpoint(checkpoint)
    return None if config_path is None else _read_hf_config(config_path)


def load_sam_state_dict(checkpoint: str | os.PathLike, *, config: SamConfig) -> dict[str, torch.Tensor]:
    """Read any supported checkpoint into a Meta-layout state dict (CPU tensors).

    ``config`` is the architecture the weights are meant for: it names the HF MLP layers and, when the
    checkpoint has a config.json, must agree with it (CheckpointError listing the differing fields).
    """
    weights_path, config_path = resolve_checkpoint(checkpoint)
    if config_path is not None:
        _check_same_architecture(_read_hf_config(config_path), config, config_path)
    state = _read_weights(weights_path)
    if is_hf_layout(list(state)):
        state = _hf_to_meta(state, config, weights_path)
    if config.tiny_vit is not None:  # TinyViT's ImageNet head, saved by MobileSAM but never used
        for key in TINY_VIT_CLASSIFIER_KEYS:
            state.pop(f"image_encoder.{key}", None)
    return state


def check_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
) -> None:
    """Refuse (CheckpointError) missing, unexpected or mis-shaped keys, naming them; else return."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    problems = [
        _listing(what, keys)
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not fit this SAM ({len(expected)} tensors expected): "
            + "; ".join(problems)
            + ". Is model_type right for these weights?"
        )


def _listing(what: str, keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {what} key(s): {', '.join(keys[:_SHOWN])}{more}"


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    size = path.stat().st_size
    hint = f"({size} bytes); it may be truncated or corrupt -- download it again"
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(os.fspath(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"cannot read safetensors file {path} {hint}: {err}") from err
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path} holds Python objects besides tensors; refusing to unpickle it "
                "(torch.load weights_only=True). Save a plain state_dict instead."
            ) from err
        raise CheckpointError(f"cannot read checkpoint {path} {hint}: {type(err).__name__}: {err}") from err
    if isinstance(obj, Mapping) and len(obj) == 1 and next(iter(obj)) in ("model", "state_dict"):
        obj = next(iter(obj.values()))  # {"model": state_dict} wrappers
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors (got {type(obj).__name__})")
    return dict(obj)


def _hf_to_meta(state: dict[str, torch.Tensor], config: SamConfig, source: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        alias_of = HF_TIED_ALIASES.get(key)
        if alias_of is not None and alias_of in state:
            if not torch.equal(value, state[alias_of]):
                raise CheckpointError(f"{source}: tied tensors {key} and {alias_of} differ")
            continue
        name = hf_key_to_meta(key, config)
        if name is None:
            unknown.append(key)
            continue
        out[name] = value
    if unknown:
        raise CheckpointError(f"{source} (Hugging Face layout) has {_listing('unexpected', sorted(unknown))}")
    return out


def _read_hf_config(path: Path) -> SamConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    try:
        return sam_config_from_hf(raw)
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: {err}") from err


def _check_same_architecture(found: SamConfig, wanted: SamConfig, source: Path) -> None:
    a, b = found.architecture(), wanted.architecture()
    diff = [f"{k}: config.json {a[k]!r} vs requested {b[k]!r}" for k in a if a[k] != b[k]]
    if diff:
        raise CheckpointError(
            f"{source} describes another SAM than requested ({'; '.join(diff)}); "
            "pick the matching model_type, or 'auto' to follow config.json"
        )


# ---------------------------------------------------------------------------------------- Hub
def _download(repo_id: str) -> tuple[Path, Path]:
    """config.json + model.safetensors of a Hub SAM through the HF cache (``sam_core.hub``'s policy)."""
    try:
        folder = fetch_snapshot(
            repo_id, [(name,) for name in HF_FILES], patterns=HF_FILES, what="SAM",
            local_hint=f"a Meta .pth/.safetensors file or a folder with {' + '.join(HF_FILES)}",
        )
    except HubFilesUnavailable as err:
        raise CheckpointError(str(err)) from err
    return folder / "model.safetensors", folder / "config.json"
