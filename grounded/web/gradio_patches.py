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

__all__ = ["fix_temp_file_sweep"]


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
