"""The app launched in this process (127.0.0.1), driven through gradio_client and raw HTTP.

Checklist 2, 3, 13 (API, CLI and HTTP agree), 10 (detection cap over HTTP), 15 (upload, base64 and
URL limits), 16 (file route), 17 (faults and ``<script>`` stay clean) and 18 (bounded queue).
Three presets share one pair of tiny models: ``tiny-random``; ``gated`` (waits in ``predict`` until
the test releases it: a slow model); ``flaky`` (its detector raises once: a failing model).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from rel_helpers import (
    REPO,
    bad_image_files,
    bomb_png,
    data_url,
    exif_rotated_jpeg,
    launched,
    load_app,
    png_bytes,
    random_rgb,
    rle_masks,
)
from spies import model_calls, pillow_decodes

import grounded.web.service
from grounded import GroundedSAM
from grounded.io.export import detections_to_dict
from grounded.web.service import PipelineProvider

MAX_FILE = 1_500_000  # bytes; small so the over-limit cases are quick
QUEUE = 2
SECRET = "/srv/models/secret-weights.bin"  # what a crashing model might put in its message
OPTIONS = {"box_threshold": 0.0, "text_threshold": 0.0, "nms_iou": 0.5, "max_detections": 5}
API_EXTRAS, CLI_EXTRAS = {"untrained", "model", "edited"}, {"path", "source", "outputs", "model"}


class _Gated(GroundedSAM):
    """A model that takes as long as the test wants: ``predict`` waits for ``gate``."""

    def __init__(self, pipe: GroundedSAM) -> None:
        super().__init__(pipe.detector, pipe.sam, config=pipe.config)
        self.gate, self.running = threading.Event(), threading.Event()

    def predict_compact(self, *args: Any, **kwargs: Any) -> Any:  # what the server runs
        self.running.set()
        assert self.gate.wait(120), "the test never released the gated model"
        return super().predict_compact(*args, **kwargs)


class _FlakyDetector:
    """Delegates to a real detector, but its next ``failures`` calls raise mid-request."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.model_id, self.failures = inner, f"{inner.model_id} (flaky)", 0
        self.untrained, self.precision = inner.untrained, inner.precision

    @property
    def cache_key(self) -> str:  # OpenVocabularyDetector: its own cache entries
        return f"{self.inner.cache_key} (flaky)"

    def describe(self) -> dict[str, str]:
        return {**self.inner.describe(), "model": self.model_id}

    def detect(self, image: np.ndarray, classes: list[str]) -> Any:
        if self.failures:
            self.failures -= 1
            raise RuntimeError(f"CUDA error: device-side assert triggered while reading {SECRET}")
        return self.inner.detect(image, classes)


@pytest.fixture(scope="module")
def server(rel_pipe: GroundedSAM) -> Iterator[SimpleNamespace]:
    app = load_app()
    gated = _Gated(rel_pipe)
    flaky = GroundedSAM(_FlakyDetector(rel_pipe.detector), rel_pipe.sam, config=rel_pipe.config)
    presets = {"tiny-random": rel_pipe, "gated": gated, "flaky": flaky}
    provider = PipelineProvider({name: (lambda p=p: p) for name, p in presets.items()},
                                configs={name: p.config for name, p in presets.items()})
    demo = app.build_demo(provider, examples=False, queue_size=QUEUE, concurrency=1, max_file_size=MAX_FILE)
    with launched(app, demo, max_file_size=MAX_FILE) as url:
        yield SimpleNamespace(url=url, demo=demo, gated=gated, flaky=flaky)


@pytest.fixture(scope="module")
def client(server: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(server.url, verbose=False, download_files=tmp_path_factory.mktemp("downloads"))


def segment(client: Client, image: Any, prompt: str, preset: str = "tiny-random", **overrides: Any) -> Any:
    o = OPTIONS | overrides
    return client.predict(image, prompt, o["box_threshold"], o["text_threshold"], o["nms_iou"], preset,
                          o["max_detections"], False, api_name="/segment")


def raw_call(url: str, image: Any, prompt: str, preset: str = "tiny-random", **overrides: Any
             ) -> tuple[str, str, httpx.Response]:
    """POST /gradio_api/call/segment, then read the event stream: (last event, its data, response)."""
    o = OPTIONS | overrides
    data = [image, prompt, o["box_threshold"], o["text_threshold"], o["nms_iou"], preset, o["max_detections"],
            False]
    event_id = httpx.post(f"{url}gradio_api/call/segment", json={"data": data}, timeout=30).json()["event_id"]
    response = httpx.get(f"{url}gradio_api/call/segment/{event_id}", timeout=120)
    events = [line.split(": ", 1)[1] for line in response.text.splitlines() if line.startswith("event: ")]
    datas = [line.split(": ", 1)[1] for line in response.text.splitlines() if line.startswith("data: ")]
    return events[-1], datas[-1], response


def api_json(pipe: GroundedSAM, image: Any, prompt: str) -> dict[str, Any]:
    """The Python API's answer in the shared schema."""
    det = pipe.predict(image, prompt, **OPTIONS)
    return detections_to_dict(det, image_size=det.mask.shape[1:], classes=pipe.classes_of(prompt))


def cli_record(pipe: GroundedSAM, image_path: Path, prompt: str, out: Path,
               monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``grounded-sam predict`` in-process on one file (its model load returns ``pipe``)."""
    from grounded.cli import main

    monkeypatch.setattr(GroundedSAM, "from_config", staticmethod(lambda *args, **kwargs: pipe))
    args = ["predict", str(image_path), "-p", prompt, "-o", str(out), "-q", "--config", "tiny-random",
            "--box-threshold", "0", "--text-threshold", "0", "--nms-iou", "0.5", "--max-detections", "5"]
    assert main(args) == 0
    (line,) = (out / "predictions.jsonl").read_text("utf-8").splitlines()
    return json.loads(line)


# ---------------------------------------------------------------------- 2 and 13: one answer everywhere
def test_exif_orientation_6_gives_the_same_aligned_masks_through_api_cli_and_http(
        server, client, rel_pipe, tmp_path, monkeypatch):
    path = exif_rotated_jpeg(tmp_path / "phone.jpg", random_rgb(5, 36, 60))  # stored 60 wide, 36 tall
    with Image.open(path) as stored:
        displayed = np.rot90(np.asarray(stored.convert("RGB")), k=-1).copy()  # 90° clockwise: 36 x 60
    expected = api_json(rel_pipe, displayed, "cat. dog")
    assert expected["image"] == {"width": 36, "height": 60} and expected["detections"]

    api = api_json(rel_pipe, path, "cat. dog")
    overlay, http = segment(client, handle_file(str(path)), "cat. dog")
    cli = cli_record(rel_pipe, path, "cat. dog", tmp_path / "out", monkeypatch)
    assert api == expected
    assert {k: http[k] for k in api} == expected and {k: cli[k] for k in api} == expected
    assert rle_masks(http).shape[1:] == (60, 36) and Image.open(overlay).size == (36, 60)
    from grounded.io.export import read_mask_png

    for mask_file, mask in zip(cli["outputs"]["masks"], rle_masks(expected), strict=True):
        np.testing.assert_array_equal(read_mask_png(tmp_path / "out" / mask_file), mask)


def test_python_api_http_api_and_cli_return_the_same_structure(
        server, client, rel_pipe, tmp_path, monkeypatch):
    path = tmp_path / "rgba.png"
    rgba = np.dstack([random_rgb(6, 44, 52), np.full((44, 52), 200, np.uint8)])
    Image.fromarray(rgba).save(path)  # a mode that needs conversion, the same way everywhere
    prompt = "Cat, DOG. traffic light."
    api = api_json(rel_pipe, path, prompt)
    http = segment(client, handle_file(str(path)), prompt)[1]
    cli = cli_record(rel_pipe, path, prompt, tmp_path / "out", monkeypatch)
    assert set(api) == {"image", "classes", "detections"}
    assert api["classes"] == ["cat", "dog", "traffic light"]
    assert set(http) == set(api) | API_EXTRAS and set(cli) == set(api) | CLI_EXTRAS
    assert {k: http[k] for k in api} == api == {k: cli[k] for k in api}
    assert json.loads(json.dumps(http)) == http  # plain JSON types


# ------------------------------------------------------------------------------ 3 and 15: input limits
def test_a_bomb_upload_is_refused_from_its_header_and_the_next_request_works(
        server, client, rel_pipe, tmp_path, monkeypatch):
    loads: list[Any] = []
    load_image = grounded.web.service.load_image

    def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(args[0])
        return load_image(*args, **kwargs)

    monkeypatch.setattr(grounded.web.service, "load_image", counted)  # the server runs in this process
    decodes = pillow_decodes(monkeypatch)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    assert bomb.stat().st_size < 2_000_000
    rss = psutil.Process().memory_info().rss
    calls = model_calls(rel_pipe)
    with pytest.raises(AppError, match=r"20000×20000 = 400\.0 MP; the limit is 40\.0 MP"):
        segment(client, handle_file(str(bomb)), "cat")
    assert len(loads) == 1 and decodes == []  # refused from the header: not one pixel decoded
    assert model_calls(rel_pipe) == calls  # and no model ran
    assert psutil.Process().memory_info().rss - rss < 200_000_000  # 400 MP were never decoded
    ok = tmp_path / "ok.png"
    ok.write_bytes(png_bytes(random_rgb(7, 30, 40)))
    assert segment(client, handle_file(str(ok)), "cat")[1]["image"] == {"width": 40, "height": 30}
    assert len(loads) == 2 and decodes  # the spies see the next request's load and decode


def test_broken_uploads_fail_fast_with_a_clear_error_and_the_server_keeps_serving(
        server, client, rel_pipe, tmp_path, monkeypatch):
    decodes = pillow_decodes(monkeypatch)  # the server runs in this process
    for name, message in bad_image_files(tmp_path / "bad").items():
        decodes.clear()
        calls = model_calls(rel_pipe)
        with pytest.raises(AppError) as info:
            segment(client, handle_file(str(tmp_path / "bad" / name)), "cat")
        assert message in str(info.value) and "Traceback" not in str(info.value), name
        # fast without a stopwatch: stopped before any model, after at most one decode attempt
        assert model_calls(rel_pipe) == calls, name
        loads = [call for call in decodes if call.startswith("load ")]
        assert len(loads) <= 1 and (name != "bomb.png" or decodes == []), (name, decodes)
    ok = tmp_path / "ok.png"
    ok.write_bytes(png_bytes(random_rgb(16, 18, 22)))
    assert segment(client, handle_file(str(ok)), "cat")[1]["image"] == {"width": 22, "height": 18}


def test_uploads_and_data_urls_over_max_file_size_are_refused_with_the_limit(server, client, tmp_path):
    big = np.random.default_rng(0).integers(0, 256, (700, 800, 3), dtype=np.uint8)  # ~1.7 MB as PNG
    payload = png_bytes(big)
    assert len(payload) > MAX_FILE
    response = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("big.png", payload)}, timeout=30)
    assert response.status_code == 413
    with pytest.raises(AppError, match=r"the limit is 1\.5 MB"):  # names the real limit, not "2 MB"
        segment(client, {"url": data_url(payload)}, "cat")
    small = {"url": data_url(png_bytes(random_rgb(8, 20, 24)))}
    assert segment(client, small, "cat")[1]["image"] == {"width": 24, "height": 20}


@contextlib.contextmanager
def _loopback_file_server(folder: Path) -> Iterator[str]:
    handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_url_inputs_are_ssrf_checked_and_get_the_same_pixel_limit(server, client, tmp_path, monkeypatch):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "bomb.png").write_bytes(bomb_png())
    (tmp_path / "www" / "small.png").write_bytes(png_bytes(random_rgb(9, 22, 26)))
    with _loopback_file_server(tmp_path / "www") as base:
        with pytest.raises(AppError) as info:  # a private address: gradio refuses to fetch it (SSRF)
            segment(client, handle_file(base + "small.png"), "cat")
        assert "127.0.0.1" not in str(info.value) and "Traceback" not in str(info.value)
        # Test seam: pretend the loopback server is public, so the download happens.
        import gradio.processing_utils

        allowed = [*gradio.processing_utils.PUBLIC_HOSTNAME_WHITELIST, "127.0.0.1"]
        monkeypatch.setattr(gradio.processing_utils, "PUBLIC_HOSTNAME_WHITELIST", allowed)
        with pytest.raises(AppError, match=r"20000×20000 = 400\.0 MP; the limit is 40\.0 MP"):
            segment(client, handle_file(base + "bomb.png"), "cat")
        small = segment(client, handle_file(base + "small.png"), "cat")[1]
        assert small["image"] == {"width": 26, "height": 22}


def test_url_downloads_stop_at_the_byte_limit(server, client, tmp_path, monkeypatch):
    """A URL whose body is over the upload limit is refused with the numbers, whether it announces its
    size (Content-Length) or not; the same SSRF checks still apply (a private host stays refused)."""
    import gradio.processing_utils

    limit = gradio.processing_utils.async_transport.max_bytes
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big.png").write_bytes(b"\x89PNG" + b"\0" * (limit + 1))
    with _loopback_file_server(tmp_path / "www") as base:
        with pytest.raises(AppError) as info:  # still a private address: refused before any byte
            segment(client, handle_file(base + "big.png"), "cat")
        assert "limit" not in str(info.value)
        allowed = [*gradio.processing_utils.PUBLIC_HOSTNAME_WHITELIST, "127.0.0.1"]
        monkeypatch.setattr(gradio.processing_utils, "PUBLIC_HOSTNAME_WHITELIST", allowed)
        with pytest.raises(AppError, match=rf"the limit is {limit / 1e6:g} MB"):
            segment(client, handle_file(base + "big.png"), "cat")


def test_a_client_cannot_lift_the_detection_cap(server, client):
    """Without a cap in SegmentOptions one HTTP call could ask for millions of N x H x W masks. The
    server must cap it (here: the page slider's maximum, 300) or refuse it."""
    words = [a + b + c for a in "bdfgklmp" for b in "aeiou" for c in "ntr"][:120]
    detector = server.gated.detector  # the same tiny detector: 30 queries per caption chunk
    assert 30 * len(detector.captions(words)) > 300  # the model proposes more than the cap
    image = {"url": data_url(png_bytes(random_rgb(11, 24, 32)))}
    try:
        result = segment(client, image, ". ".join(words), nms_iou=1.0, max_detections=1_000_000)[1]
    except AppError as error:
        assert "max_detections" in str(error)
    else:
        assert len(result["classes"]) == 120
        assert len(result["detections"]) <= 300


# ------------------------------------------------------------------------------------- 16: file route
@pytest.mark.parametrize("target", [
    "/etc/passwd", "%2Fetc%2Fpasswd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/proc/self/environ",
    str(REPO / "app.py"), str(REPO / "grounded" / "pipeline.py"), str(REPO / ".git" / "config"),
    str(REPO / "pyproject.toml"), str(Path.home() / ".bashrc"), str(REPO / ".venv" / "pyvenv.cfg"),
])
def test_the_file_route_serves_no_system_file_source_or_dotfile(server, target):
    response = httpx.get(f"{server.url}gradio_api/file={target}", timeout=10)
    assert response.status_code in (403, 404), response.text[:200]
    assert "root:" not in response.text and "import " not in response.text and "[core]" not in response.text


def test_the_file_route_refuses_escapes_from_its_own_outputs(server):
    event, data, _ = raw_call(server.url, {"url": data_url(png_bytes(random_rgb(12, 20, 30)))}, "cat")
    assert event == "complete"
    overlay = Path(json.loads(data)[0]["path"])  # the server's own output file
    assert httpx.get(f"{server.url}gradio_api/file={overlay}", timeout=10).status_code == 200  # the control
    link = overlay.parent / f"passwd-{uuid.uuid4().hex}.png"  # a symlink planted next to an output
    link.symlink_to("/etc/passwd")
    try:
        for target in (link, f"{overlay.parent}/../../../../../etc/passwd"):
            response = httpx.get(f"{server.url}gradio_api/file={target}", timeout=10)
            assert response.status_code in (403, 404) and "root:" not in response.text
    finally:
        link.unlink()


# --------------------------------------------------------------------------------------- 17: faults
def _clean(text: str) -> None:
    for leak in (SECRET, "Traceback", 'File "', str(REPO), "RuntimeError", "CUDA"):
        assert leak not in text, f"{leak!r} reached the client: {text[:300]}"


def test_a_model_failure_mid_request_is_a_clean_error_and_the_next_request_succeeds(
        server, client, rel_pipe, tmp_path, caplog):
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(random_rgb(13, 30, 44)))
    expected = segment(client, handle_file(str(image)), "cat. dog")[1]
    server.flaky.detector.failures = 1  # the detector raises inside the request
    with caplog.at_level(logging.ERROR):
        event, data, _ = raw_call(server.url, {"url": data_url(image.read_bytes())}, "cat. dog",
                                  preset="flaky")
    assert event == "error" and "Internal error" in data
    _clean(data)
    assert SECRET in caplog.text  # ... but the operator's log keeps the details
    assert segment(client, handle_file(str(image)), "cat. dog", preset="flaky")[1]["detections"] == \
        expected["detections"]

    decode = server.flaky._predictor.predict_low_res_torch  # now SAM's decoder raises, after the detector ran
    calls: list[int] = []

    def broken_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(f"out of memory at {SECRET}")
        return decode(*args, **kwargs)

    server.flaky._predictor.predict_low_res_torch = broken_once
    other = tmp_path / "b.png"
    other.write_bytes(png_bytes(random_rgb(14, 30, 44)))
    try:
        with pytest.raises(AppError) as info:
            segment(client, handle_file(str(other)), "cat. dog", preset="flaky")
        assert "Internal error" in str(info.value)
        _clean(str(info.value))
        again = segment(client, handle_file(str(other)), "cat. dog", preset="flaky")[1]
    finally:
        del server.flaky._predictor.predict_low_res_torch
    assert again["detections"] == segment(client, handle_file(str(other)), "cat. dog")[1]["detections"]


def test_a_script_prompt_is_json_text_and_is_escaped_in_error_messages(server):
    image = {"url": data_url(png_bytes(random_rgb(15, 26, 30)))}
    prompt = "<script>alert(1)</script>"
    event, data, response = raw_call(server.url, image, prompt)
    assert response.headers["content-type"].startswith("text/event-stream")  # never text/html
    assert event == "complete"
    result = json.loads(data)[1]
    assert result["classes"] == [prompt] and {row["label"] for row in result["detections"]} == {prompt}
    event, data, response = raw_call(server.url, image, prompt * 3)  # one phrase over the text limit
    # The HTTP API's message is plain text in a JSON string of an event stream (never text/html, so
    # inert); the page's events HTML-escape theirs (tests/app/test_app_api.py::test_script_prompt...).
    assert response.headers["content-type"].startswith("text/event-stream")
    assert event == "error" and json.loads(data)["error"].count(prompt) == 3
    assert "&lt;" not in data and "tokens long" in data


# ---------------------------------------------------------------------------------------- 18: queue
def test_the_queue_is_bounded_extra_jobs_get_queue_full_and_the_server_recovers(server, client, tmp_path):
    gated = server.gated
    gated.gate.clear()
    gated.running.clear()
    paths = []
    for k in range(QUEUE + 3):
        paths.append(tmp_path / f"q{k}.png")
        paths[-1].write_bytes(png_bytes(random_rgb(20 + k, 20 + k, 30)))  # job k: an image 20 + k tall
    args = (OPTIONS["box_threshold"], OPTIONS["text_threshold"], OPTIONS["nms_iou"], "gated", 3, False)
    try:
        first = client.submit(handle_file(str(paths[0])), "cat", *args, api_name="/segment")
        assert gated.running.wait(60), "the first job never started"
        waiting = [client.submit(handle_file(str(p)), "cat", *args, api_name="/segment")
                   for p in paths[1:QUEUE + 1]]
        deadline = time.monotonic() + 120  # a hang guard, not a speed claim
        while len(server.demo._queue) < QUEUE:
            assert time.monotonic() < deadline, "the waiting jobs never reached the queue"
            time.sleep(0.05)
        refused = [client.submit(handle_file(str(p)), "cat", *args, api_name="/segment")
                   for p in paths[QUEUE + 1:]]
        for job in refused:
            with pytest.raises(Exception, match="Queue is full") as info:
                job.result(timeout=30)  # a hang guard, not a speed claim
            assert not isinstance(info.value, FutureTimeout)
        # refused at once: while the gated model still holds the first job and the queue is full
        assert not first.done() and not any(job.done() for job in waiting)
    finally:
        gated.gate.set()
    for k, job in enumerate([first, *waiting]):
        assert job.result(timeout=120)[1]["image"] == {"width": 30, "height": 20 + k}  # each its own
    ok = segment(client, handle_file(str(paths[-1])), "cat")[1]
    assert ok["image"] == {"width": 30, "height": 20 + QUEUE + 2}
