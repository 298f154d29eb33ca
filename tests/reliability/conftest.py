"""Fixtures for the reliability tests: one tiny-random pipeline shared by the in-process tests."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry from in-process test servers


@pytest.fixture(scope="session")
def rel_pipe() -> Any:
    """The untrained tiny pipeline (fixed seed), detections capped for quick HTTP payloads."""
    from grounded.pipeline import GroundedSAM

    return GroundedSAM.from_config("tiny-random", device="cpu", max_detections=8)
