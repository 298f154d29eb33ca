"""Helpers shared by the app tests (imported by name: pytest puts this folder on ``sys.path``).

``app.py`` sits at the repository root (Hugging Face Spaces runs it as a script), so it is loaded
by file path rather than through ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

from app_launch import free_port, launched, load_app  # noqa: F401 - re-exported to the tests

REPO = Path(__file__).resolve().parents[2]
