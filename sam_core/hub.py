"""The one Hugging Face Hub policy for model files (SAM weights here; ``grounded`` uses it for detectors).

1. Every required file already in the cache -> that snapshot folder, with no network call at all.
2. Otherwise ``HF_HUB_OFFLINE`` set -> fail at once; the Hub's host does not resolve -> fail at once
   (instead of after huggingface_hub's retries).
3. Otherwise download the files into the cache. A gated or private repository the user may not read
   (the Hub answers 401/403: licence not accepted, not logged in) fails with a
   :class:`HubAccessDenied` whose one sentence names the model page and ``hf auth login``.
Every other failure is a :class:`HubFilesUnavailable` naming the repo, the missing files, the cache folder,
the ``hf download`` command, ``HF_HUB_OFFLINE`` and the local-path alternative.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "HubAccessDenied", "HubFilesUnavailable", "fetch_file", "fetch_snapshot", "hub_cache_dir", "hub_offline",
    "on_this_machine", "parse_hub_file",
]

HUB_FILE_PREFIX = "hf://"  # hf://OWNER/REPO/path/in/repo.pt: one file of a Hub repository


class HubFilesUnavailable(ValueError):
    """A Hub repository's files are not cached and cannot be downloaded now."""


class HubAccessDenied(HubFilesUnavailable):
    """The Hub refused the download (401/403): a gated model whose licence is not accepted, or no login."""


def access_denied_message(repo_id: str, what: str) -> str:
    """One sentence: what is gated, where to accept the licence, how to log in."""
    return (
        f"{what} {repo_id!r} is gated and this machine has no access to it: accept its licence on "
        f"https://huggingface.co/{repo_id} with your Hugging Face account, then log in here with "
        "`hf auth login` (or set HF_TOKEN) and try again."
    )


def _is_access_denied(error: BaseException) -> bool:
    """huggingface_hub's GatedRepoError, or an HTTP 401/403 answer from the Hub."""
    from huggingface_hub.errors import GatedRepoError

    if isinstance(error, GatedRepoError):
        return True
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status in (401, 403)


def hub_cache_dir() -> Path:
    """The Hugging Face cache, read at call time (HF_HUB_CACHE, then HF_HOME, then the library's)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (the environment, or huggingface_hub's constant)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    from huggingface_hub import constants

    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def fetch_snapshot(
    repo_id: str,
    required: Sequence[Sequence[str]],
    *,
    patterns: Sequence[str],
    what: str,
    local_hint: str,
) -> Path:
    """A local snapshot folder of ``repo_id`` holding, for each group of ``required``, one of its names.

    Args:
        required: groups of alternative top-level file names, e.g. ``[("config.json",), ("model.safetensors",
            "model.safetensors.index.json")]``.
        patterns: what to download (``allow_patterns`` of ``snapshot_download``).
        what: the model's role for messages ("SAM", "detector").
        local_hint: what a local path should hold, for the message.
    """
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    cache_dir = hub_cache_dir()

    def cached(name: str) -> str | None:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        return found if isinstance(found, str) else None

    hits = [next((cached(name) for name in group if cached(name)), None) for group in required]
    missing = [" or ".join(group) for group, hit in zip(required, hits, strict=True) if hit is None]
    if not missing:  # the snapshot folder: strip the first file's own path inside the repo
        return Path(hits[0]).parents[len(Path(required[0][0]).parts) - 1]
    offline = hub_offline()
    reason = "HF_HUB_OFFLINE is set and the files are not in the cache" if offline else _unreachable_reason()
    if reason is None:
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=list(patterns), cache_dir=cache_dir))
        except Exception as error:  # network, auth, unknown repo: one actionable message
            if _is_access_denied(error):
                raise HubAccessDenied(access_denied_message(repo_id, what)) from error
            reason = f"{type(error).__name__}: {error}"
        else:
            missing = [" or ".join(g) for g in required if not any((folder / n).is_file() for n in g)]
            if not missing:
                return folder
            reason = "the downloaded snapshot lacks them"
    state = "HF_HUB_OFFLINE=1 is set" if offline else "HF_HUB_OFFLINE is not set"
    raise HubFilesUnavailable(
        f"cannot load {what} {repo_id!r}: {', '.join(missing)} not in the Hugging Face cache {cache_dir} "
        f"and could not be downloaded ({reason}; {state}). "
        f"Options: (1) pass a local path ({local_hint}); (2) on a machine with network run "
        f"`hf download {repo_id}` into the same cache (HF_HOME / HF_HUB_CACHE), then set HF_HUB_OFFLINE=1 "
        "to run without network; (3) check the Hub id and your access to it (`hf auth login` for gated "
        "or private models)."
    )


def parse_hub_file(text: str) -> tuple[str, str] | None:
    """``"hf://owner/repo/file.pt"`` -> ``("owner/repo", "file.pt")``; None for anything else."""
    if not text.startswith(HUB_FILE_PREFIX):
        return None
    parts = text[len(HUB_FILE_PREFIX) :].split("/")
    if len(parts) < 3 or not all(parts):
        raise HubFilesUnavailable(f"{text!r} is not a Hub file reference; write hf://OWNER/REPO/FILE")
    return "/".join(parts[:2]), "/".join(parts[2:])


def on_this_machine(ref: str) -> bool | None:
    """Whether the weights ``ref`` names load with no download, checked without any network call.

    True: an existing local path, or a Hub reference whose file (``hf://OWNER/REPO/FILE`` or
    ``OWNER/REPO/FILE``) or ``config.json`` (``OWNER/REPO``) is in the cache. False: a Hub reference
    that is not cached. None: anything else (in-process test models such as ``tiny-random``).
    """
    if Path(ref).expanduser().exists():
        return True
    parts = ref.removeprefix(HUB_FILE_PREFIX).split("/")
    if ref.startswith((".", "/", "~")) or len(parts) < 2 or not all(parts):
        return None
    repo_id = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or "config.json"  # a snapshot repo: its config marks it cached
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir()), str)


def fetch_file(repo_id: str, filename: str, *, what: str, local_hint: str) -> Path:
    """One file of a Hub repository through the same policy as :func:`fetch_snapshot`."""
    folder = fetch_snapshot(repo_id, [(filename,)], patterns=[filename], what=what, local_hint=local_hint)
    return folder / filename


def _unreachable_reason() -> str | None:
    """Why the Hub clearly cannot be reached (its host name does not resolve), or None.

    Skipped behind a proxy, where only the proxy needs to resolve the name.
    """
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
    if any(os.environ.get(v) for v in proxies):
        return None
    from huggingface_hub import constants

    host = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        return f"no network: cannot resolve {host} ({err})"
    return None
