"""Helpers shared by the app tests (imported by name: pytest puts this folder on ``sys.path``).

``app.py`` sits at the repository root (Hugging Face Spaces runs it as a script), so it is loaded
by file path rather than through ``sys.path``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app_launch import free_port, launched, load_app  # noqa: F401 - re-exported to the tests

REPO = Path(__file__).resolve().parents[2]


CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by `make browser`
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic"]
NO_CHROMIUM = "Chromium is not installed (/usr/bin/chromium): run `make browser`, then the tests again"


def chromium_path() -> str | None:
    """Debian's Chromium, or one on PATH; None when there is none (browser tests then FAIL)."""
    return str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")


@contextlib.contextmanager
def chromium_page(url: str, *, width: int, height: int) -> Iterator[Any]:
    """A fresh headless Chromium page on ``url`` (own profile, downloads allowed); ``page.errors`` collects
    the page's JavaScript errors. Raises ``RuntimeError`` without Chromium."""
    chromium = chromium_path()
    if not chromium:
        raise RuntimeError(NO_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="gsam-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": width, "height": height}, accept_downloads=True)
        try:
            page = context.new_page()
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.goto(url, wait_until="domcontentloaded")
            yield page
        finally:
            context.close()
