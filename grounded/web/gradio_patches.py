"""Workarounds for bugs in the Gradio release we pin, applied by ``app.py``; each says when to drop it."""

from __future__ import annotations

import functools
import logging
from typing import Any

_LOG = logging.getLogger(__name__)
_RETRIES = 5
# Releases checked to have the sweep race (6.31.0 is the newest checked: the README's pinned
# sdk_version). A newer Gradio is left alone; tests/reliability/test_rel_temp_files.py shows whether
# it still needs the patch when the pin moves.
_SWEEP_RACE = ("6.0.0", "6.31.0")

__all__ = [
    "API_DEFAULTS", "explain_input_errors", "fill_missing_api_inputs", "fix_temp_file_sweep",
    "limit_stored_input_values", "limit_url_downloads",
]

API_DEFAULTS = "_grounded_api_defaults"  # attribute of an event function: defaults for its inputs


def has_sweep_race(version: str) -> bool:
    """True for the Gradio releases known to have the temp-file sweep race."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(_SWEEP_RACE[0]) <= Version(version) <= Version(_SWEEP_RACE[1])
    except InvalidVersion:
        return False


def fix_temp_file_sweep() -> bool:
    """Keep Gradio's periodic temp-file clean-up alive when a request adds a file mid-sweep.

    Gradio 6.31's ``route_utils.delete_files_created_by_app`` iterates each temp-file set while request
    threads add to it. The clash raises ``RuntimeError: Set changed size during iteration`` inside the
    scheduled task, which then dies, and no temporary file is deleted again until restart. The scheduler
    looks the function up on every run, so wrapping it with a retry keeps the sweep going. Idempotent.
    Applied only to the releases in ``_SWEEP_RACE``; returns whether it is in place.
    Drop once Gradio iterates over a copy of each set.
    """
    import gradio
    from gradio import route_utils

    if not has_sweep_race(gradio.__version__):
        _LOG.debug("gradio %s is not known to have the temp-file sweep race; not patched", gradio.__version__)
        return False

    original = route_utils.delete_files_created_by_app
    if getattr(original, "_grounded_sam_retry", False):
        return True

    @functools.wraps(original)
    def sweep(blocks: Any, age: int | None) -> None:
        for _ in range(_RETRIES):
            try:
                return original(blocks, age)
            except RuntimeError as error:
                if "changed size during iteration" not in str(error):
                    raise
        _LOG.warning("temp-file sweep kept racing with requests; trying again on the next run")

    sweep._grounded_sam_retry = True  # type: ignore[attr-defined]
    route_utils.delete_files_created_by_app = sweep
    return True


# Input values larger than this are not copied into a session's stored config (see below).
STORED_VALUE_LIMIT = 64 * 1024


def limit_stored_input_values(limit: int = STORED_VALUE_LIMIT) -> bool:
    """Keep Gradio from holding every request's inputs and outputs in its per-session config.

    Gradio copies each input's serialised value into the session's config before an event runs, and
    each output's after it (``SessionState._update_value_in_config``), and keeps them for as long as
    the session is kept (up to ``state_session_capacity`` sessions; an API call without a session id
    gets a new session each time). A base64 ``data:`` image is then held once per session: 256
    sessions of 25 MB bodies are 6 GB, refused requests included; the page's result JSON (~0.7 MB of
    Python objects for 30 masks of a 2 MP image) would add 180 MB outside the session budget. That
    copy only serves deep links; values larger than ``limit`` are stored as ``None`` instead.
    Idempotent; applies to every Gradio 6 release (checked on the pinned one by tests/reliability);
    returns whether it is in place.
    """
    from gradio import state_holder

    original = state_holder.SessionState._update_value_in_config
    if getattr(original, "_grounded_sam_limit", False):
        return True

    @functools.wraps(original)
    def update(self: Any, key: int, value: Any) -> None:
        original(self, key, None if _size_at_least(value, limit) else value)

    update._grounded_sam_limit = True  # type: ignore[attr-defined]
    state_holder.SessionState._update_value_in_config = update
    return True


# What one Python object costs at least, beyond the text it holds: a small int or float is 24-28 bytes,
# each slot of a list or dict 8-16 more. An estimate from below is enough to decide "too large to keep".
_LEAF_BYTES = 24
_SLOT_BYTES = 8


def _size_at_least(value: Any, limit: int) -> bool:
    """Whether ``value`` takes at least ``limit`` bytes of memory: the text of its strings and bytes plus
    a lower bound for every other leaf (numbers, booleans, None) and every container slot, walking dicts
    and lists, and into pydantic models (Gradio hands a ``gr.JSON`` output over as its ``JsonData``
    root model). A result JSON of run-length counts holds no long string but many numbers, and is as
    large to keep as the text would be."""
    from pydantic import BaseModel, RootModel

    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, RootModel):
            stack.append(item.root)
        elif isinstance(item, BaseModel):
            stack.extend(vars(item).values())
        elif isinstance(item, (str, bytes, bytearray)):
            total += len(item)
        elif isinstance(item, dict):
            total += _SLOT_BYTES * 2 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += _SLOT_BYTES * len(item)
            stack.extend(item)
        else:
            total += _LEAF_BYTES
        if total >= limit:
            return True
    return False


def fill_missing_api_inputs() -> bool:
    """Let raw HTTP callers leave out an endpoint's optional trailing inputs.

    Gradio refuses a call with fewer values than the event has inputs (and, with ``show_error=False``,
    says only ``{"error": null}``). An event function that carries ``API_DEFAULTS`` (a list, one value
    per input) gets the missing trailing values filled from it, as ``gradio_client`` fills them for its
    users. Idempotent; returns whether it is in place.
    """
    from gradio.blocks import Blocks

    original = Blocks.validate_inputs
    if getattr(original, "_grounded_sam_fill", False):
        return True

    @functools.wraps(original)
    def validate(self: Any, block_fn: Any, inputs: list[Any]) -> Any:
        defaults = getattr(block_fn.fn, API_DEFAULTS, None)
        if defaults is not None and isinstance(inputs, list) and len(inputs) < len(defaults):
            inputs.extend(defaults[len(inputs) :])
        return original(self, block_fn, inputs)

    validate._grounded_sam_fill = True  # type: ignore[attr-defined]
    Blocks.validate_inputs = validate
    return True


def explain_input_errors() -> bool:
    """Give Gradio's own input refusals a message for HTTP clients.

    Before an event runs, Gradio validates each input against its data model and moves files into
    its cache (refusing server paths and private URLs). Those refusals are plain exceptions, which
    ``show_error=False`` turns into ``{"error": null}``. This wrapper re-raises them as ``gr.Error``
    with a fixed message per kind -- never the exception's text, which can hold server paths. The
    details still go to the server log. Idempotent; returns whether it is in place.
    """
    import gradio as gr
    from gradio.blocks import Blocks

    original = Blocks.preprocess_data
    if getattr(original, "_grounded_sam_explain", False):
        return True

    @functools.wraps(original)
    async def preprocess_data(self: Any, block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - every refusal gets a message; details to the log
            _LOG.info("input refused before the event ran: %s: %s", type(error).__name__, error)
            if type(error).__name__ == "DownloadTooLarge":
                message = str(error)  # names the size and the limit; no paths
            elif type(error).__name__ == "ValidationError":
                message = ("an input has the wrong form: send images as a file payload "
                           '{"path": ..., "meta": {"_type": "gradio.FileData"}} (gradio_client.handle_file), '
                           'as {"url": "data:image/png;base64,..."} or {"url": "https://..."}')
            else:
                message = ("the image could not be taken: only files uploaded to this app (POST "
                           "/gradio_api/upload), base64 data: URLs and public http(s) URLs are accepted")
            raise gr.Error(message, print_exception=False) from None

    preprocess_data._grounded_sam_explain = True  # type: ignore[attr-defined]
    Blocks.preprocess_data = preprocess_data
    return True


def limit_url_downloads(max_bytes: int) -> bool:
    """Images given as URLs are downloaded through ``grounded.web.url_limit.LimitedTransport``: the same
    SSRF checks as Gradio's, and no more than ``max_bytes`` read. Returns whether it is in place."""
    from gradio import processing_utils

    from grounded.web.url_limit import LimitedTransport

    processing_utils.async_transport = LimitedTransport(max_bytes)
    return True
