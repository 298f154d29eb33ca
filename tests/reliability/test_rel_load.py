"""The real app (``app.main``, tiny-random preset) in its own process on 127.0.0.1, under load.

Checklist 18 (8 concurrent clients, uncrossed results), 19 (memory and temporary files flat over 200
sequential requests) and 22 (no network call at start-up or while serving, ``HF_HUB_OFFLINE=1``).
The server's sockets go through a recorder that logs and blocks every non-loopback connection.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from rel_helpers import (
    app_process,
    data_url,
    network_attempts,
    png_bytes,
    random_rgb,
    rle_masks,
    server_env,
)

from grounded.io.export import detections_to_dict

pytestmark = pytest.mark.slow  # a launched server under load and a 200-request soak: minutes

CLIENTS, REQUESTS = 8, 10
SOAK = 200
RETENTION = (2, 10)  # Gradio cache clean-up for this server: every 2 s, files older than 10 s
PROMPTS = ["cat. dog", "car. bus. truck", "person", "tree. sky", "cup. fork", "bird. kite", "boat",
           "chair. bed"]
DISTINCT = 50  # the soak cycles over this many images: new ones fill the caches, repeats hit them
OPTIONS = {"box_threshold": 0.3, "text_threshold": 0.2, "nms_iou": 0.5, "max_detections": 5}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("app-server")
    netlog, temp_dir = root / "network.log", root / "gradio"
    env = server_env(root / "site", netlog, temp_dir,
                     GSAM_TEST_DELETE_CACHE=",".join(str(v) for v in RETENTION))
    with app_process(["--config", "tiny-random"], workdir=root, env=env) as (url, process):
        yield SimpleNamespace(url=url, process=psutil.Process(process.pid), netlog=netlog,
                              temp_dir=temp_dir, env=env, root=root)


def _size(client: int) -> tuple[int, int]:
    return 40 + 4 * client, 56 + 2 * client  # (H, W): every client has its own image size


def _image(client: int, request: int) -> Any:
    return random_rgb(1000 * client + request, *_size(client))


def _run_client(url: str, client: int, folder: Path) -> list[tuple[int, int, str, dict[str, Any]]]:
    api = Client(url, verbose=False, download_files=folder)
    results = []
    for request in range(REQUESTS):
        pixels = _image(client, request)
        if client % 2:  # odd clients send base64 data URLs, even ones upload files
            image: Any = {"url": data_url(png_bytes(pixels))}
        else:
            path = folder / f"c{client}_r{request}.png"
            Image.fromarray(pixels).save(path)
            image = handle_file(str(path))
        o = OPTIONS
        overlay, result = api.predict(image, PROMPTS[client], o["box_threshold"], o["text_threshold"],
                                      o["nms_iou"], "tiny-random", o["max_detections"], False,
                                      api_name="/segment")
        results.append((client, request, overlay, result))
    return results


def _same(got: Any, want: Any) -> bool:
    """Equal structure, strings, ints and RLE masks; floats within 1e-4 (the server is another process,
    whose thread scheduling may change the last float32 digits of a score, never a label or a mask)."""
    if isinstance(want, dict):
        same_keys = isinstance(got, dict) and got.keys() == want.keys()
        return same_keys and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same, got, want))
    if isinstance(want, float) and not isinstance(got, bool) and isinstance(got, (int, float)):
        return abs(got - want) <= 1e-4 * max(1.0, abs(want))
    return got == want


def test_eight_concurrent_clients_get_correct_uncrossed_results(server, rel_pipe, tmp_path):
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(_run_client, server.url, client, tmp_path) for client in range(CLIENTS)]
        answers = [item for future in futures for item in future.result(timeout=600)]  # a hang guard
    assert len(answers) == CLIENTS * REQUESTS
    for client, request, overlay, result in answers:
        height, width = _size(client)
        classes = rel_pipe.classes_of(PROMPTS[client])
        assert result["image"] == {"width": width, "height": height} and result["classes"] == classes
        assert {row["label"] for row in result["detections"]} <= set(classes)
        assert rle_masks(result).shape[1:] == (height, width)
        assert Image.open(overlay).size == (width, height)
        direct = rel_pipe.predict(_image(client, request), classes, **OPTIONS)  # the Python API's answer
        expected = detections_to_dict(direct, image_size=(height, width), classes=classes)
        assert _same(
            {k: result[k] for k in expected}, expected
        ), f"client {client} request {request}: {result} != {expected}"
    assert sum(len(result["detections"]) for *_, result in answers) > 0
    assert httpx.get(server.url, timeout=10).status_code == 200  # still serving
    after = _run_client(server.url, 3, tmp_path)[:1]
    assert after[0][3]["image"] == {"width": _size(3)[1], "height": _size(3)[0]}


def _raw_segment(url: str, index: int) -> dict[str, Any]:
    """One request over plain HTTP: upload (even) or base64 (odd), call, read the event stream."""
    payload = png_bytes(random_rgb(50_000 + index % DISTINCT, 60, 80))
    if index % 2:
        image: Any = {"url": data_url(payload)}
    else:
        files = {"files": (f"s{index}.png", payload)}
        uploaded = httpx.post(f"{url}gradio_api/upload", files=files, timeout=30)
        image = {"path": uploaded.json()[0], "orig_name": f"s{index}.png",
                 "meta": {"_type": "gradio.FileData"}}
    data = [image, PROMPTS[index % len(PROMPTS)], 0.3, 0.2, 0.5, "tiny-random", 5, False]
    event_id = httpx.post(f"{url}gradio_api/call/segment", json={"data": data}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{url}gradio_api/call/segment/{event_id}", timeout=120).text
    assert "event: complete" in stream, stream[-500:]
    return {"stream": stream}


def _files(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0


def test_memory_and_temporary_files_stay_flat_over_200_sequential_requests(server):
    rss: dict[int, int] = {}
    files: dict[int, int] = {}
    times: list[float] = []
    started_wall = time.time()
    for index in range(1, SOAK + 1):
        times.append(time.monotonic())
        _raw_segment(server.url, index)
        if index in (20, SOAK):
            rss[index] = server.process.memory_info().rss
            files[index] = _files(server.temp_dir)
    growth = (rss[SOAK] - rss[20]) / rss[20]
    assert growth <= 0.10, f"RSS grew {growth:.1%} between request 20 and {SOAK}: {rss}"
    # Every request leaves an overlay PNG (and half of them an upload) in Gradio's cache; what is still
    # there must be only what the last RETENTION window produced, not the whole soak.
    window = RETENTION[0] + RETENTION[1] + 5
    recent = sum(1 for t in times if t > time.monotonic() - window)
    assert files[SOAK] <= 2 * recent + 10, f"{files[SOAK]} files left; {recent} requests in {window} s"
    # and nothing older than the retention window is left, however fast the requests came
    # (files from before the soak -- the page's example images -- are the app's own, kept by design)
    made = {path: path.stat().st_mtime for path in server.temp_dir.rglob("*") if path.is_file()}
    old = {path.relative_to(server.temp_dir).as_posix(): round(time.time() - mtime)
           for path, mtime in made.items() if started_wall <= mtime < time.time() - window}
    assert not old, f"temporary files older than {window} s are left: {old}"


def test_start_up_and_serving_make_no_network_call(server):
    """``HF_HUB_OFFLINE=1``: nothing but loopback, from start-up to the last request of this module.

    Guards against Gradio's launch-time version check and telemetry (api.gradio.app, huggingface.co),
    which run when ``analytics_enabled`` is left at Gradio's default.
    """
    control = server.root / "control.log"  # the recorder works: the same environment, one lookup
    probe = "import socket\ntry: socket.getaddrinfo('example.com', 443)\nexcept OSError: pass"
    subprocess.run([sys.executable, "-c", probe], env={**server.env, "NETLOG": str(control)}, timeout=60,
                   check=True)
    assert network_attempts(control) == ["getaddrinfo example.com"]
    time.sleep(1)  # let any background start-up thread finish
    attempts = network_attempts(server.netlog)
    assert attempts == [], "\n".join(attempts) + "\n" + server.netlog.read_text("utf-8")[-3000:]
