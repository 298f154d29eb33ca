"""Workarounds for bugs in the Gradio release we pin, applied by ``app.py``; each says when to drop it."""

from __future__ import annotations

import functools
import logging
from typing import Any

_LOG = logging.getLogger(__name__)
_RETRIES = 5

__all__ = ["fix_temp_file_sweep"]


def fix_temp_file_sweep() -> None:
    """Keep Gradio's periodic temp-file clean-up alive when a request adds a file mid-sweep.

    Gradio 6.31's ``route_utils.delete_files_created_by_app`` iterates each temp-file set while request
    threads add to it. The clash raises ``RuntimeError: Set changed size during iteration`` inside the
    scheduled task, which then dies, and no temporary file is deleted again until restart. The scheduler
    looks the function up on every run, so wrapping it with a retry keeps the sweep going. Idempotent.
    Drop once Gradio iterates over a copy of each set.
    """
    from gradio import route_utils

    original = route_utils.delete_files_created_by_app
    if getattr(original, "_grounded_sam_retry", False):
        return

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
