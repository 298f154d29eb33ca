"""Load an IDEA-Research Grounding DINO ``.pth`` (e.g. ``groundingdino_swint_ogc.pth``) as our detector.

The file is read with ``torch.load(weights_only=True)`` (tensors only: a pickled object is refused),
unwrapped from ``{"model": ...}`` and any ``module.`` prefix (DataParallel), and mapped key by key onto
transformers' ``GroundingDinoForObjectDetection`` (``grounded.detectors.idea_format``), strictly. The
tokenizer is BERT-base-uncased, as IDEA's code uses, from a local folder or the Hugging Face cache,
both through the one Hub policy (``sam_core.hub``). A Hub file is named ``owner/repo/file.pth``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from grounded.detectors.grounding_dino import GroundingDinoDetector
from grounded.detectors.idea_architecture import (
    IdeaFormatError,
    architecture_from_state_dict,
    read_idea_config,
    transformers_config,
)
from grounded.detectors.idea_format import TRANSFORMERS_ONLY, to_transformers
from grounded.detectors.loading import ModelUnavailableError
from sam_core.hub import HubFilesUnavailable, fetch_snapshot

__all__ = [
    "DEFAULT_TOKENIZER",
    "IDEA_SUFFIXES",
    "is_idea_checkpoint",
    "load_idea_detector",
    "read_idea_state_dict",
    "resolve_idea_file",
]

DEFAULT_TOKENIZER = "google-bert/bert-base-uncased"
IDEA_SUFFIXES = (".pth", ".pt")
_TOKENIZER_FILES = (("vocab.txt", "tokenizer.json"),)
_TOKENIZER_PATTERNS = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def is_idea_checkpoint(name: str) -> bool:
    """A local ``.pth``/``.pt`` file, or a Hub file ``owner/repo/[folder/]file.pth``."""
    if not name.endswith(IDEA_SUFFIXES):
        return False
    path = Path(name).expanduser()
    return path.is_file() or (
        not path.exists() and name.count("/") >= 2 and not name.startswith((".", "/", "~"))
    )


def resolve_idea_file(name: str) -> Path:
    """The local file for ``name`` (a path, or ``owner/repo/file.pth`` fetched through the Hub cache)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    owner, repo, filename = name.split("/", 2)
    try:
        folder = fetch_snapshot(
            f"{owner}/{repo}",
            [(filename,)],
            patterns=[filename],
            what="detector",
            local_hint="a local IDEA Grounding DINO .pth file",
        )
    except HubFilesUnavailable as error:
        raise ModelUnavailableError(str(error)) from error
    return folder / filename


def read_idea_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an IDEA checkpoint: ``{"model": state_dict}`` or a bare state dict; ``module.`` stripped.

    Raises:
        IdeaFormatError: the file holds pickled objects other than tensors and containers (refused by
            ``weights_only=True``; never unpickled), or no state dict.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise IdeaFormatError(
            f"{str(path)!r} is not a tensors-only checkpoint; it is read with torch.load(weights_only=True), "
            f"which refuses arbitrary pickled objects ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]
    if not isinstance(payload, dict) or not payload:
        raise IdeaFormatError(f"{str(path)!r} holds no state dict (expected {{'model': {{name: tensor}}}})")
    bad = sorted(
        str(k) for k, v in payload.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    )
    if bad:
        raise IdeaFormatError(f"{str(path)!r}: entries that are not tensors: {', '.join(bad[:5])}")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def load_idea_detector(
    name: str,
    *,
    tokenizer: str | None = None,
    config_file: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    fast_path: bool = True,
    quantize_int8: bool = False,
) -> GroundingDinoDetector:
    """An IDEA ``.pth`` as a ``GroundingDinoDetector``.

    Args:
        name: a local file or ``owner/repo/file.pth`` on the Hub (``ShilongLiu/GroundingDINO/...``).
        tokenizer: a BERT tokenizer folder or Hub id; default: the config file's ``text_encoder_type``,
            else ``google-bert/bert-base-uncased``.
        config_file: IDEA's Python config (read with ``ast``, never executed); its values must agree
            with the checkpoint's shapes, and it supplies heads/points, which shapes cannot tell apart.
        device, dtype, fast_path, quantize_int8: as ``GroundingDinoDetector``.

    Raises:
        IdeaFormatError: missing or unexpected keys (named), shapes that do not fit, a non-tensor payload.
        ModelUnavailableError: the file or the tokenizer is neither local nor obtainable from the Hub.
    """
    from transformers import BertTokenizer, GroundingDinoForObjectDetection

    path = resolve_idea_file(name)
    config = read_idea_config(config_file) if config_file else {}
    state_dict = read_idea_state_dict(path)
    arch = architecture_from_state_dict(state_dict, config)
    weights = to_transformers(state_dict, arch)
    model = GroundingDinoForObjectDetection(transformers_config(arch))
    _load_strict(model, weights, path)
    tokenizer_name = tokenizer or str(config.get("text_encoder_type") or DEFAULT_TOKENIZER)
    text_tokenizer = BertTokenizer.from_pretrained(_tokenizer_folder(tokenizer_name))
    model_id = str(path.resolve()) if Path(name).expanduser().is_file() else name
    return GroundingDinoDetector(
        model,
        text_tokenizer,
        model_id=model_id,
        device=device,
        dtype=dtype,
        fast_path=fast_path,
        quantize_int8=quantize_int8,
    )


def _load_strict(model: Any, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Copy ``weights`` in; every model key but ``TRANSFORMERS_ONLY`` must be given, in its shape."""
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})"
        for k, v in weights.items()
        if k in own and own[k].shape != v.shape
    ]
    if wrong:
        raise IdeaFormatError(
            f"{str(path)!r}: shapes do not fit the architecture read from it: {', '.join(wrong[:5])}"
        )
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not TRANSFORMERS_ONLY.fullmatch(k)]
    if missing or result.unexpected_keys:
        raise IdeaFormatError(
            f"{str(path)!r} does not fill the model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _tokenizer_folder(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        return fetch_snapshot(
            name,
            _TOKENIZER_FILES,
            patterns=_TOKENIZER_PATTERNS,
            what="tokenizer",
            local_hint="a folder holding a BERT vocab.txt or tokenizer.json",
        )
    except HubFilesUnavailable as error:
        raise ModelUnavailableError(str(error)) from error
