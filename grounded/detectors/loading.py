"""Find a transformers detector folder (Grounding DINO family, SAM 3): a local path, or a Hub repo id
through the Hugging Face cache.

Hub ids go through ``sam_core.hub`` (the project's one Hub policy: a warm cache makes no network
call; ``HF_HUB_OFFLINE`` or no network fails at once with a :class:`ModelUnavailableError` naming the
repo, the missing files, the cache directory and what to do).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sam_core.hub import HubFilesUnavailable, fetch_snapshot

__all__ = [
    "MODEL_CLASSES",
    "ModelUnavailableError",
    "REQUIRED_FILES",
    "checkpoint_model_type",
    "load_grounding_dino",
    "load_transformers_model",
    "resolve_model_folder",
]

# config.json ``model_type`` -> the transformers class that runs it (the first two share
# GroundingDinoModel's forward).
MODEL_CLASSES: dict[str, str] = {
    "grounding-dino": "GroundingDinoForObjectDetection",
    "mm-grounding-dino": "MMGroundingDinoForObjectDetection",
    "sam3": "Sam3Model",
}

# What GroundingDinoForObjectDetection + AutoTokenizer need; each entry is satisfied by any one of its
# names. Weights are safetensors only (single file or sharded).
_REQUIRED = (
    ("config.json",),
    ("model.safetensors", "model.safetensors.index.json"),
    ("tokenizer_config.json",),
    ("tokenizer.json", "vocab.txt", "vocab.json"),
)
REQUIRED_FILES = tuple(" or ".join(names) for names in _REQUIRED)
_DOWNLOAD_PATTERNS = [
    "config.json",
    "model*.safetensors*",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
]


class ModelUnavailableError(ValueError):
    """The detector's files are neither in the given folder nor obtainable through the HF cache."""


def resolve_model_folder(name_or_path: str) -> Path:
    """Return a local folder holding the model's files, downloading into the HF cache if allowed.

    Args:
        name_or_path: a local folder, or a Hub repo id such as ``"IDEA-Research/grounding-dino-tiny"``.

    Raises:
        ModelUnavailableError: the folder lacks files, or the repo's files are not cached and cannot
            be downloaded (``HF_HUB_OFFLINE=1``, no network, unknown repo); the message names the
            missing files, the cache directory and the two remedies.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        missing = _missing_files(path)
        if missing:
            raise ModelUnavailableError(
                f"model folder {str(path)!r} lacks {', '.join(missing)}; a Grounding DINO folder needs "
                f"{', '.join(REQUIRED_FILES)} (e.g. from `hf download IDEA-Research/grounding-dino-tiny "
                f"--local-dir {path}`)"
            )
        return path
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelUnavailableError(
            f"{name_or_path!r} is not a model folder (it does not exist or is a file) nor a Hub repo id "
            "like 'IDEA-Research/grounding-dino-tiny'"
        )

    try:
        return fetch_snapshot(
            name_or_path, _REQUIRED, patterns=_DOWNLOAD_PATTERNS, what="detector",
            local_hint=f"a local folder holding {', '.join(REQUIRED_FILES)}",
        )
    except HubFilesUnavailable as error:
        raise ModelUnavailableError(str(error)) from error


def checkpoint_model_type(folder: Path) -> str:
    """``model_type`` of the folder's ``config.json`` (``grounding-dino``, ``mm-grounding-dino``, ...)."""
    path = Path(folder) / "config.json"
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ModelUnavailableError(f"cannot read {str(path)!r} ({type(error).__name__}: {error})") from error
    if not isinstance(model_type, str):
        raise ModelUnavailableError(f"{str(path)!r} names no model_type; is it a transformers model folder?")
    return model_type


def load_grounding_dino(folder: Path, *, dtype: Any = None, model_type: str = "grounding-dino") -> Any:
    """A Grounding DINO family model from a resolved folder (:func:`load_transformers_model`)."""
    return load_transformers_model(folder, dtype=dtype, model_type=model_type)


def load_transformers_model(folder: Path, *, dtype: Any = None, model_type: str = "grounding-dino") -> Any:
    """The ``MODEL_CLASSES[model_type]`` model from a resolved folder, strictly.

    The folder's ``config.json`` must name ``model_type`` (a Grounding DINO folder is never loaded
    as MM-Grounding-DINO or the other way round: the class heads differ).

    transformers would fill missing weights with random values and only log it; a corrupt safetensors
    file raises safetensors' own error. Both become a :class:`ModelUnavailableError` naming the file
    or the offending keys, so a damaged download is never served as a silently half-random model.
    """
    import transformers
    from safetensors import SafetensorError

    found = checkpoint_model_type(folder)
    if found != model_type:
        raise ModelUnavailableError(
            f"{str(folder)!r} holds a {found!r} checkpoint, not {model_type!r}; name it in the detector "
            "config as it is (the registry picks the loader from config.json's model_type)"
        )
    model_class = getattr(transformers, MODEL_CLASSES[model_type])
    try:
        model, info = model_class.from_pretrained(
            folder, use_safetensors=True, dtype=dtype, output_loading_info=True
        )
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ModelUnavailableError(
            f"cannot read the detector weights in {str(folder)!r} ({type(error).__name__}: {error}); the "
            "file is corrupt or truncated: download it again (`hf download <repo id>`) or replace "
            f"{str(folder / 'model.safetensors')!r}"
        ) from error
    problems = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys")}
    problems["mismatched_keys"] = sorted(
        str(item[0]) if isinstance(item, tuple) else str(item) for item in info.get("mismatched_keys") or []
    )
    bad = {kind: keys for kind, keys in problems.items() if keys}
    if bad:
        listing = "; ".join(
            f"{kind.replace('_', ' ')}: {', '.join(keys[:5])}"
            + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
            for kind, keys in bad.items()
        )
        raise ModelUnavailableError(
            f"detector checkpoint in {str(folder)!r} does not match its config.json ({listing}); "
            "download it again or use the matching config"
        )
    return model


def _missing_files(folder: Path) -> list[str]:
    return [" or ".join(names) for names in _REQUIRED if not any((folder / name).is_file() for name in names)]
