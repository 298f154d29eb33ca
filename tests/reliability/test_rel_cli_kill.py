"""A real ``grounded-sam predict`` process killed with SIGKILL mid-run resumes without losing or
duplicating images: JSONL, COCO and mask files hold each image exactly once, equal to a clean run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pycocotools.coco import COCO
from rel_helpers import random_rgb, stop

from grounded.io.export import read_mask_png, rle_to_mask

pytestmark = pytest.mark.slow  # real CLI processes, killed and resumed: about a minute

N_IMAGES = 12
KILL_AFTER = 3  # finished images (complete JSONL lines) before the SIGKILL
MODEL = ["--config", "tiny-random", "--box-threshold", "0", "--text-threshold", "0", "--max-detections", "2"]


def _console_script() -> str:
    beside_python = Path(sys.executable).parent / "grounded-sam"
    found = str(beside_python) if beside_python.exists() else shutil.which("grounded-sam")
    assert found, "the grounded-sam console script is not installed: run `pip install -e .`"
    return found


def _command(images: Path, out: Path) -> list[str]:
    return [_console_script(), "predict", str(images), "-p", "cat. dog", "-o", str(out), "-q", *MODEL]


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "source"}  # the absolute path differs per folder


def test_sigkilled_run_resumes_with_every_image_exactly_once(tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    names = [f"img_{i:02d}.png" for i in range(N_IMAGES)]
    for i, name in enumerate(names):
        Image.fromarray(random_rgb(i, 40 + 2 * (i % 4), 56)).save(images / name)
    out = tmp_path / "out"
    records_file = out / "predictions.jsonl"

    process = subprocess.Popen(_command(images, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while _complete_lines(records_file) < KILL_AFTER:
            assert process.poll() is None, f"ended before the kill: {process.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no progress within 180 s"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        stop(process)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    before = _complete_lines(records_file)
    assert KILL_AFTER <= before < N_IMAGES, "the kill must land mid-run"
    finished_bytes = b"".join(records_file.read_bytes().splitlines(keepends=True)[:before])

    from grounded.cli import main

    assert main(_command(images, out)[1:]) == 0  # the same command again (in-process: one start-up less)
    assert records_file.read_bytes().startswith(finished_bytes)  # finished images untouched, not redone

    records = _records(out)
    assert sorted(r["path"] for r in records) == names  # each image exactly once
    coco = COCO(str(out / "annotations.json"))
    assert sorted(img["file_name"] for img in coco.imgs.values()) == names
    assert len(coco.anns) == sum(len(r["detections"]) for r in records) == 2 * N_IMAGES
    assert len({a["id"] for a in coco.anns.values()}) == len(coco.anns)
    referenced = {m for r in records for m in r["outputs"]["masks"]}
    on_disk = {p.relative_to(out).as_posix() for p in (out / "masks").rglob("*.png")}
    assert on_disk == referenced and len(referenced) == 2 * N_IMAGES  # no duplicate or orphan masks
    for record in records:
        for row, mask_file in zip(record["detections"], record["outputs"]["masks"], strict=True):
            assert (read_mask_png(out / mask_file) == rle_to_mask(row["mask"])).all()

    # the interrupted-and-resumed folder equals an uninterrupted run, image by image
    clean = tmp_path / "clean"
    assert main(_command(images, clean)[1:]) == 0
    by_path = {r["path"]: _comparable(r) for r in _records(clean)}
    assert {r["path"]: _comparable(r) for r in records} == by_path
