"""SAM 3 through the launched app's HTTP API: `/segment` with optional exemplar boxes, a gated preset
whose error names the model page and `hf auth login` while the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
from app_helpers import launched
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub.errors import GatedRepoError
from PIL import Image

from grounded.io.export import detections_to_dict
from grounded.pipeline import GroundedSAM
from grounded.web.service import PipelineProvider
from sam_core import hub

OPTIONS = {"box_threshold": 0.2, "text_threshold": 0.0, "nms_iou": 1.0, "max_detections": 6}
POSITIVE, NEGATIVE = [[10.0, 20.0, 70.0, 90.0]], [[90.0, 5.0, 150.0, 60.0]]


def _gated_hub(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """A cold cache and a Hub that answers 403 (licence not accepted) to any download."""
    import huggingface_hub
    import huggingface_hub.constants as constants

    def refuse(repo_id: str, **kwargs: Any) -> str:
        response = httpx2.Response(403, request=httpx2.Request("GET", f"https://huggingface.co/{repo_id}"))
        raise GatedRepoError(f"Access to model {repo_id} is restricted.", response=response)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(hub, "_unreachable_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


@pytest.fixture(scope="module")
def sam3_pipe() -> GroundedSAM:
    return GroundedSAM.from_config("tiny-random-sam3", device="cpu")


@pytest.fixture(scope="module")
def server(app_module, sam3_pipe, tiny_app_pipe, tmp_path_factory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _gated_hub(monkeypatch, tmp_path_factory.mktemp("hub"))
        builders = {"tiny-random-sam3": lambda: sam3_pipe, "tiny-random": lambda: tiny_app_pipe,
                    "sam3": lambda: GroundedSAM.from_config("sam3", device="cpu")}
        provider = PipelineProvider(builders, configs={"tiny-random-sam3": sam3_pipe.config})
        demo = app_module.build_demo(provider, examples=False, queue_size=8, concurrency=1)
        with launched(app_module, demo) as url:
            yield url


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[str, np.ndarray]:
    image = np.random.default_rng(3).integers(0, 256, (100, 151, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(image).save(path)
    return str(path), image


def segment(client: Client, path: str, prompt: str, preset: str = "tiny-random-sam3", **kwargs: Any) -> Any:
    return client.predict(handle_file(path), prompt, **OPTIONS, preset=preset, api_name="/segment", **kwargs)


def test_exemplar_boxes_over_http_equal_the_python_api(client, photo, sam3_pipe):
    path, image = photo
    _, result = segment(client, path, "cat", exemplar_boxes={"positive": POSITIVE, "negative": NEGATIVE})
    direct = sam3_pipe.predict(image, "cat", positive_boxes=POSITIVE, negative_boxes=NEGATIVE, **OPTIONS)
    expected = detections_to_dict(direct, image_size=image.shape[:2], classes=["cat"])
    assert result["detections"] == expected["detections"] and len(expected["detections"]) == 6
    assert result["model"]["sam"] == "none"
    _, plain = segment(client, path, "cat")  # the parameter is optional; without it the boxes differ
    assert [d["score"] for d in plain["detections"]] != [d["score"] for d in result["detections"]]


def test_exemplar_boxes_for_a_detector_without_them_and_bad_boxes_are_clear_errors(client, photo):
    path, _ = photo
    with pytest.raises(AppError, match="cannot use exemplar boxes"):
        segment(client, path, "cat", preset="tiny-random", exemplar_boxes={"positive": POSITIVE})
    with pytest.raises(AppError, match="exemplar_boxes"):
        segment(client, path, "cat", exemplar_boxes={"positive": [[1, 2, 3]]})
    with pytest.raises(AppError, match="empty or outside"):
        segment(client, path, "cat", exemplar_boxes={"negative": [[500, 500, 600, 600]]})


def test_a_gated_preset_names_the_licence_page_and_login_and_the_server_keeps_serving(client, photo):
    path, _ = photo
    with pytest.raises(AppError) as info:
        segment(client, path, "cat", preset="sam3")
    message = str(info.value)
    assert "https://huggingface.co/facebook/sam3" in message and "`hf auth login`" in message
    _, result = segment(client, path, "cat. dog")  # the next request on another preset is served
    assert len(result["detections"]) == 6


def test_page_corrections_on_sam3_alone_say_a_sam_is_needed_and_the_rest_still_works(sam3_pipe, photo):
    """With ``sam: none`` (the sam3 preset) adding by box needs SAM: a clear error; delete/undo still work."""
    from grounded.web import service
    from grounded.web.service import SegmentOptions

    provider = PipelineProvider.from_pipeline(sam3_pipe)
    options = SegmentOptions(box_threshold=0.0, text_threshold=0.0, nms_iou=0.5, max_detections=8)
    session = service.segment(provider, photo[1], "cat. dog", preset=None, options=options)
    assert len(session.detections) >= 1, "the tiny random SAM 3 must keep a detection at threshold 0"
    with pytest.raises(ValueError, match="needs a SAM model.*sam: none"):
        service.add_box(provider, session, (10.0, 10.0, 60.0, 50.0), "dog")
    deleted = service.delete_instance(session, 0)
    assert len(deleted.detections) == len(session.detections) - 1
    assert len(service.undo(deleted).detections) == len(session.detections)
