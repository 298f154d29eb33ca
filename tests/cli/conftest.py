"""Fixtures for the CLI tests: the synthetic shapes data set and one shared tiny-random pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import ShapesDataset, make_shapes_dataset


@pytest.fixture()
def shapes(tmp_path: Path) -> ShapesDataset:
    return make_shapes_dataset(tmp_path / "shapes")


@pytest.fixture(scope="session")
def tiny_pipe() -> Any:
    """One tiny-random pipeline for the whole session (built in-process from a fixed seed)."""
    from grounded.pipeline import GroundedSAM

    return GroundedSAM.from_config("tiny-random", device="cpu")


@pytest.fixture()
def shared_pipeline(monkeypatch: pytest.MonkeyPatch, tiny_pipe: Any) -> Any:
    """Make ``GroundedSAM.from_config('tiny-random')`` inside ``main`` reuse the session pipeline.

    The CLI path (argument parsing, config check, loading call) still runs; only the model build is
    skipped. One test and the console-script test build the models for real.
    """
    from grounded.config import load_config
    from grounded.pipeline import GroundedSAM

    def from_config(name_or_path: Any = "default", **kwargs: Any) -> Any:
        config = load_config(name_or_path)
        assert config.name == "tiny-random", "tests only use the tiny-random preset"
        return tiny_pipe

    monkeypatch.setattr(GroundedSAM, "from_config", staticmethod(from_config))
    return tiny_pipe
