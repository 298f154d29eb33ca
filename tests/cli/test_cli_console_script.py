"""The installed `grounded-sam` console script, run once as a real subprocess (models built for real)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import write_corrupt_jpeg, write_png

pytestmark = pytest.mark.slow  # a fresh interpreter imports torch, transformers and builds the models


def _console_script() -> str:
    beside_python = Path(sys.executable).parent / "grounded-sam"
    found = str(beside_python) if beside_python.exists() else shutil.which("grounded-sam")
    assert found, "the grounded-sam console script is not installed: run `pip install -e .`"
    return found


def test_console_script_predicts_and_reports_skips(tmp_path: Path) -> None:
    write_png(tmp_path / "in" / "good.png", 0)
    write_corrupt_jpeg(tmp_path / "in" / "bad.jpg")
    out = tmp_path / "out"
    completed = subprocess.run(
        [_console_script(), "predict", str(tmp_path / "in"), "--prompt", "cat. dog", "--out", str(out),
         "--config", "tiny-random", "--box-threshold", "0", "--text-threshold", "0", "--max-detections", "2"],
        capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "skipped 1 of 2 images:" in completed.stderr and "bad.jpg: could not decode" in completed.stderr
    assert "Traceback" not in completed.stderr
    (line,) = (out / "predictions.jsonl").read_text("utf-8").splitlines()
    record = json.loads(line)
    assert record["path"] == "good.png" and len(record["detections"]) == 2
    coco = json.loads((out / "annotations.json").read_text("utf-8"))
    assert [image["file_name"] for image in coco["images"]] == ["good.png"]
    assert len(coco["annotations"]) == 2
    assert all((out / mask).is_file() for mask in record["outputs"]["masks"])
    assert (out / "overlays" / "good.png").is_file()
