"""Fixtures for the app tests: the app module, the tiny-random pipeline and the example photos."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import pytest
from app_helpers import load_app

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from test servers


@pytest.fixture(scope="session")
def app_module() -> ModuleType:
    return load_app()


@pytest.fixture(scope="session")
def tiny_app_pipe() -> Any:
    """One untrained tiny pipeline for all app tests (capped detections keep the UI quick)."""
    from grounded.pipeline import GroundedSAM

    return GroundedSAM.from_config("tiny-random", device="cpu", max_detections=8)


@pytest.fixture(scope="module")
def provider(tiny_app_pipe: Any) -> Any:
    """A ``PipelineProvider`` serving the tiny pipeline as its only preset."""
    from grounded.web.service import PipelineProvider

    return PipelineProvider.from_pipeline(tiny_app_pipe)


@pytest.fixture(scope="session")
def cat() -> Any:
    import skimage.data

    return skimage.data.chelsea()  # 300 x 451 x 3 uint8


@pytest.fixture(scope="session")
def examples(app_module: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """``[path, prompt]`` pairs of the scikit-image example photos, as the app writes them."""
    return app_module.write_examples(tmp_path_factory.mktemp("examples"))
