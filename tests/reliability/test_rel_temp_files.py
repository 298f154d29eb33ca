"""Checklist 19, temporary files: Gradio's periodic clean-up must outlive a request that adds a file
while a sweep is running (the normal case on a busy server).

Gradio 6.31's sweep iterates each temp-file set while request threads add to it; the first clash
raises ``RuntimeError: Set changed size during iteration`` inside the scheduled task, which then dies,
and no file is ever deleted again. This test makes that clash happen on the first sweep
(deterministically, instead of once in a while) and checks that files are still deleted afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import gradio.route_utils
import httpx
import pytest
from rel_helpers import launched, load_app, png_bytes, random_rgb

pytestmark = pytest.mark.slow  # waits for Gradio's timed clean-up sweeps (sleep-bound, not CPU-bound)

FREQUENCY, AGE = 1, 1  # seconds: sweep every second, delete files older than a second


class _RacingPath(type(Path())):  # the concrete PosixPath/WindowsPath class, so Path(...) works
    """``Path`` for Gradio's sweep: the first ``lstat`` adds a file to every temp-file set, as a request
    finishing at that moment would."""

    sets: list[set[str]] = []
    raced = False

    def lstat(self) -> Any:
        if not _RacingPath.raced:
            _RacingPath.raced = True
            for temp_set in _RacingPath.sets:
                temp_set.add(str(Path(self).parent / "added-by-a-request-during-the-sweep.png"))
        return super().lstat()


def test_cleanup_keeps_deleting_after_a_sweep_races_with_a_request(rel_pipe, tmp_path, monkeypatch):
    app = load_app()
    demo = app.build_demo(rel_pipe, examples=False)
    demo.delete_cache = (FREQUENCY, AGE)  # the app's own (600, 3600), shortened for the test
    _RacingPath.sets, _RacingPath.raced = demo.temp_file_sets, False
    monkeypatch.setattr(gradio.route_utils, "Path", _RacingPath)
    run = uuid.uuid4().int % 10**9  # content never seen before, so no file is left from an earlier run
    first: list[Path] = []
    later: list[Path] = []
    with launched(app, demo) as url:
        try:
            _check_cleanup(url, run, first, later)
        finally:
            for path in first + later:  # what this test made, even if the server left it behind
                path.unlink(missing_ok=True)


def _check_cleanup(url: str, run: int, first: list[Path], later: list[Path]) -> None:
    """Files of a request made before the racing sweep, and of one made after it, are all deleted."""
    first += _segment(url, random_rgb(run, 24, 32))
    deadline = time.monotonic() + 120  # hang guards in this function, not speed claims
    while not _RacingPath.raced:  # the first sweep ran and met a "request" mid-way
        assert time.monotonic() < deadline, "no clean-up sweep ran"
        time.sleep(0.2)
    time.sleep(FREQUENCY + 0.5)
    later += _segment(url, random_rgb(run + 1, 24, 32))
    assert all(path.exists() for path in later)
    deadline = time.monotonic() + AGE + 60 * FREQUENCY  # a dead clean-up task never deletes them
    while any(path.exists() for path in first + later):
        if time.monotonic() > deadline:
            left = [str(p) for p in first + later if p.exists()]
            pytest.fail(f"Gradio's clean-up task died after a racing sweep; never deleted: {left}")
        time.sleep(0.2)


def _segment(url: str, pixels: Any) -> list[Path]:
    """Upload, segment, and return the server-side files of the request: [upload, overlay]."""
    uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": ("in.png", png_bytes(pixels))},
                          timeout=30).json()[0]
    image = {"path": uploaded, "orig_name": "in.png", "meta": {"_type": "gradio.FileData"}}
    data = [image, "cat", 0.0, 0.0, 0.5, "tiny-random", 3, False]
    event_id = httpx.post(f"{url}gradio_api/call/segment", json={"data": data}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{url}gradio_api/call/segment/{event_id}", timeout=60).text
    complete = stream.split("event: complete\ndata: ", 1)[1].splitlines()[0]
    return [Path(uploaded), Path(json.loads(complete)[0]["path"])]
