"""Gated weights (facebook/sam3): when the Hub answers 401/403 (licence not accepted, not logged in),
the error is one sentence naming the model page and `hf auth login`, nothing hangs, and the web
service keeps serving its other presets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx2
import numpy as np
import pytest
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError
from spies import network_attempts

from grounded.detectors.loading import ModelUnavailableError
from grounded.pipeline import GroundedSAM
from grounded.web import service
from grounded.web.service import PipelineProvider, PresetUnavailableError, SegmentOptions
from sam_core import hub

URL = "https://huggingface.co/api/models/facebook/sam3"


def gated() -> Exception:
    return GatedRepoError("Access to model facebook/sam3 is restricted.",
                          response=httpx2.Response(403, request=httpx2.Request("GET", URL)))


def unauthorised() -> Exception:
    response = httpx2.Response(401, request=httpx2.Request("GET", URL))
    return HfHubHTTPError("401 Client Error: Unauthorized", response=response)


@pytest.fixture()
def hub_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Callable[[], Exception]], list[str]]:
    """Make the Hub 'reachable' with a cold cache and ``snapshot_download`` raise the given error."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(hub, "_unreachable_reason", lambda: None)

    def answer(error: Callable[[], Exception]) -> list[str]:
        calls: list[str] = []

        def snapshot_download(repo_id: str, **kwargs: object) -> str:
            calls.append(repo_id)
            raise error()

        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
        return calls

    return answer


@pytest.mark.parametrize("error", [gated, unauthorised])
def test_gated_weights_give_one_sentence_naming_the_page_and_the_login(hub_answers, monkeypatch, error):
    calls = hub_answers(error)
    attempts = network_attempts(monkeypatch)
    with pytest.raises(ModelUnavailableError) as info:
        GroundedSAM.from_config("sam3", device="cpu")
    message = str(info.value)
    assert calls == ["facebook/sam3"] and attempts == []  # one (simulated) request, no retries, no hang
    assert "https://huggingface.co/facebook/sam3" in message and "`hf auth login`" in message
    assert "gated" in message and message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert isinstance(info.value.__cause__, hub.HubAccessDenied)


def test_other_hub_errors_keep_the_general_message(hub_answers):
    hub_answers(lambda: OSError("connection reset"))
    with pytest.raises(ModelUnavailableError) as info:
        GroundedSAM.from_config("sam3", device="cpu")
    assert not isinstance(info.value.__cause__, hub.HubAccessDenied)
    assert "connection reset" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)


def test_the_service_reports_the_gated_preset_and_keeps_serving(hub_answers):
    hub_answers(gated)
    tiny = GroundedSAM.from_config("tiny-random-sam3", device="cpu")
    provider = PipelineProvider({"tiny-random-sam3": lambda: tiny,
                                 "sam3": lambda: GroundedSAM.from_config("sam3", device="cpu")})
    options = SegmentOptions(box_threshold=0.2, text_threshold=0.0, nms_iou=1.0, max_detections=5)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with pytest.raises(PresetUnavailableError) as info:
        service.segment(provider, image, "cat", preset="sam3", options=options)
    message = str(info.value)
    assert "preset 'sam3'" in message and "`hf auth login`" in message
    assert "https://huggingface.co/facebook/sam3" in message and "/tmp" not in message  # no server paths
    session = service.segment(provider, image, "cat", preset="tiny-random-sam3", options=options)
    assert len(session.detections) == 5


def test_the_page_lists_the_sam3_preset_and_loads_it_only_on_first_use(hub_answers):
    calls = hub_answers(gated)
    provider = PipelineProvider.from_config("default")  # what app.py offers on the page
    assert "sam3" in provider.names and "tiny-random-sam3" not in provider.names
    sam3 = provider.config("sam3")
    assert sam3.detector.model == "facebook/sam3" and not sam3.sam.enabled
    assert calls == []  # listing it fetched nothing
    with pytest.raises(PresetUnavailableError, match="hf auth login"):
        provider.get("sam3")
    assert calls == ["facebook/sam3"]
