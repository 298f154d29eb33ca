"""The launched app through gradio_client and plain HTTP: endpoints, results, errors, limits, files."""

from __future__ import annotations

import base64
import io
import os
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from app_helpers import REPO, launched
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from pycocotools import mask as mask_utils
from spies import pillow_decodes

from grounded.web import service
from grounded.web.service import PipelineProvider

MAX_FILE = 2_000_000  # a small upload limit keeps the over-limit test quick
SECRET = "/srv/secret-weights/never-shown.bin"


def _broken() -> Any:
    raise OSError(f"weights missing at {SECRET}")  # a preset whose weights are not on this server


class _Exploding:
    """The tiny pipeline, except that running it fails the way a bug or a CUDA fault would."""

    def __init__(self, pipe: Any) -> None:
        self.config, self.classes_of = pipe.config, pipe.classes_of

    def predict_compact(self, *args: Any, **kwargs: Any) -> Any:  # what the server runs
        raise RuntimeError(f"CUDA error: device-side assert at {SECRET}")


@pytest.fixture(scope="module")
def server(app_module, tiny_app_pipe) -> Iterator[tuple[str, Any]]:
    builders = {"tiny-random": lambda: tiny_app_pipe, "broken": _broken,
                "exploding": lambda: _Exploding(tiny_app_pipe)}
    provider = PipelineProvider(builders, configs={"tiny-random": tiny_app_pipe.config})
    demo = app_module.build_demo(provider, examples=False, queue_size=16, concurrency=2,
                                 max_file_size=MAX_FILE)
    with launched(app_module, demo, max_file_size=MAX_FILE) as url:
        yield url, demo


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[0], verbose=False)


def segment(client: Client, image: Any, prompt: str, **kwargs: Any) -> tuple[str, dict]:
    params = {"box_threshold": 0.3, "text_threshold": 0.2, "nms_iou": 0.5, "max_detections": 8} | kwargs
    return client.predict(image, prompt, **params, api_name="/segment")


def test_view_api_lists_only_the_segment_endpoint(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/segment"] and not api["unnamed_endpoints"]
    endpoint = api["named_endpoints"]["/segment"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == [
        "image", "prompt", "box_threshold", "text_threshold", "nms_iou", "preset", "max_detections",
        "multimask", "exemplar_boxes"]
    assert endpoint["parameters"][-1]["parameter_has_default"]  # optional: older clients still work
    assert [r["label"] for r in endpoint["returns"]] == ["overlay", "result"]


def test_segment_returns_the_overlay_and_json_of_the_python_api(client, examples, tiny_app_pipe):
    path, prompt = examples[1]  # astronaut, 512 x 512
    overlay, result = segment(client, handle_file(path), prompt)
    image = np.array(Image.open(path).convert("RGB"))
    assert Image.open(overlay).size == (512, 512)
    assert result["image"] == {"width": 512, "height": 512} and result["untrained"] is True
    assert result["classes"] == ["person", "rocket", "flag"] and result["detections"]
    for row in result["detections"]:
        mask = mask_utils.decode({"size": row["mask"]["size"], "counts": row["mask"]["counts"].encode()})
        assert mask.shape == (512, 512) and int(mask.sum()) == row["area"]
    options = service.SegmentOptions(0.3, 0.2, 0.5, 8)
    provider = PipelineProvider.from_pipeline(tiny_app_pipe)
    direct = service.result_json(service.segment(provider, image, prompt, preset=None, options=options))
    assert result["detections"] == direct["detections"]  # HTTP API == Python API


def test_empty_prompt_comes_back_as_the_clear_error(client, examples):
    with pytest.raises(AppError, match="prompt is empty"):
        segment(client, handle_file(examples[0][0]), "   ")


def test_concurrent_clients_get_their_own_results(server, examples, tiny_app_pipe, tmp_path):
    # four photos plus two different images under the same file name: results follow content, not names
    cases = [(path, prompt) for path, prompt in examples[:4]]
    for i, photo in enumerate(("astronaut.png", "coffee.png")):
        twin = tmp_path / f"twin{i}" / "photo.png"
        twin.parent.mkdir()
        source = next(p for p, _ in examples if p.endswith(photo))
        Image.open(source).crop((0, 0, 300 + 40 * i, 200)).save(twin)
        cases.append((str(twin), "cup. person"))
    expected = {}
    for path, prompt in cases:
        image = np.array(Image.open(path).convert("RGB"))
        det = tiny_app_pipe.predict(image, prompt, box_threshold=0.3, text_threshold=0.2, nms_iou=0.5,
                                    max_detections=8)
        expected[path] = (image.shape[:2], [round(float(x), 2) for x in det.xyxy.ravel()])

    def call(case: tuple[str, str]) -> tuple[str, dict]:
        return case[0], segment(Client(server[0], verbose=False), handle_file(case[0]), case[1])[1]

    with ThreadPoolExecutor(8) as pool:  # 8 clients at once; the queue serialises the model calls
        results = list(pool.map(call, cases + cases[:2]))
    assert len(results) == 8
    for path, result in results:
        (height, width), boxes = expected[path]
        assert result["image"] == {"width": width, "height": height}
        got = [v for row in result["detections"] for v in row["box_xyxy"]]
        np.testing.assert_allclose(got, boxes, atol=0.011)


@pytest.mark.slow  # a 200-request soak
def test_memory_stays_flat_over_200_sequential_requests(server):
    import psutil

    rng = np.random.default_rng(0)
    process = psutil.Process()  # the server runs in this process
    with httpx.Client(base_url=server[0], timeout=60) as http:
        uploaded = []
        for i in range(20):  # 20 distinct images: 20 model runs and cache entries, then cached repeats
            buffer = io.BytesIO()
            # 120 x 160: keeping one request's image and masks (~0.2 MB) would exceed the limits
            ramp = np.linspace(0, 1, 160, dtype=np.float32)[None, :, None] * rng.uniform(60, 250, 3)
            Image.fromarray(np.broadcast_to(ramp, (120, 160, 3)).astype(np.uint8)).save(buffer, "PNG")
            response = http.post("gradio_api/upload", files={"files": (f"ramp{i}.png", buffer.getvalue())})
            uploaded.append({"path": response.json()[0], "meta": {"_type": "gradio.FileData"}})
        tracemalloc.start()
        try:
            for i in range(200):  # one client session over the REST route, sequential
                if i == 80:  # after the caches filled and the allocator warmed up
                    traced, rss = tracemalloc.get_traced_memory()[0], process.memory_info().rss
                data = [uploaded[i % 20], "cat. dog", 0.3, 0.2, 0.5, "tiny-random", 8, False]
                body = {"data": data, "session_hash": "one-client"}
                event = http.post("gradio_api/call/segment", json=body).json()["event_id"]
                assert "event: complete" in http.get(f"gradio_api/call/segment/{event}").text
            traced_growth = tracemalloc.get_traced_memory()[0] - traced
        finally:
            tracemalloc.stop()
    rss_growth = process.memory_info().rss - rss
    assert traced_growth < 8 * 2**20, f"Python objects grew {traced_growth / 2**20:.1f} MB over 120 requests"
    assert rss_growth < 48 * 2**20, f"server memory grew {rss_growth / 2**20:.0f} MB over 120 requests"


@pytest.mark.parametrize("target", ["/etc/passwd", str(REPO / "app.py"), str(REPO / ".gitignore"),
                                    str(REPO / "grounded" / "web" / "service.py"), "../../../../etc/passwd"])
def test_file_route_refuses_system_files_source_and_dotfiles(server, target):
    response = httpx.get(f"{server[0]}gradio_api/file={target}", timeout=10)
    assert response.status_code in (403, 404)
    assert "root:" not in response.text and "import" not in response.text


def test_upload_over_max_file_size_is_refused(server):
    payload = os.urandom(MAX_FILE + 1000)
    response = httpx.post(f"{server[0]}gradio_api/upload", files={"files": ("big.png", payload)}, timeout=30)
    assert response.status_code == 413


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_base64_bomb_is_refused_from_its_header_and_the_next_request_works(client, examples, monkeypatch):
    bomb = _png(20000, 20000, "1")  # 400 MP, tens of kB
    assert len(bomb) < 2_000_000
    decodes = pillow_decodes(monkeypatch)  # the server runs in this process
    with pytest.raises(AppError, match=r"20000×20000 = 400\.0 MP; the limit is 40\.0 MP"):
        segment(client, {"url": "data:image/png;base64," + base64.b64encode(bomb).decode()}, "cat")
    assert decodes == []  # refused from the header: not one pixel decoded
    small = {"url": "data:image/png;base64," + base64.b64encode(_png(40, 30)).decode()}
    assert segment(client, small, "cat")[1]["image"] == {"width": 40, "height": 30}
    assert decodes  # the spy sees the server's decodes


def test_a_server_path_is_not_accepted_as_an_image(client, examples):
    with pytest.raises(AppError, match="not a file uploaded to this app"):
        segment(client, {"path": examples[0][0]}, "cat")  # no upload: a path on the server


def test_unexpected_errors_show_no_traceback_or_paths(client, examples):
    with pytest.raises(AppError) as info:
        segment(client, handle_file(examples[0][0]), "cat", preset="exploding")
    message = str(info.value)
    assert "Internal error" in message
    assert SECRET not in message and "Traceback" not in message and "CUDA" not in message
    assert segment(client, handle_file(examples[0][0]), "cat")[1]["detections"]  # still serving


def test_a_preset_without_weights_gives_a_clear_error_without_paths(client, examples):
    with pytest.raises(AppError, match="preset 'broken' could not be loaded on this server") as info:
        segment(client, handle_file(examples[0][0]), "cat", preset="broken")
    assert SECRET not in str(info.value)


def test_script_prompt_stays_plain_text(client, examples):
    prompt = "<script>alert(1)</script>"
    _, result = segment(client, handle_file(examples[0][0]), prompt, box_threshold=0.0, text_threshold=0.0)
    assert result["classes"] == [prompt] and result["detections"]
    assert {row["label"] for row in result["detections"]} == {prompt}


def test_queue_is_bounded_and_files_are_cleaned(server):
    demo = server[1]
    assert demo._queue.max_size == 16
    assert demo.delete_cache is not None and demo.show_error is False
    assert not demo.allowed_paths
