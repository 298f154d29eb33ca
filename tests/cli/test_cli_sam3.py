"""`detector: sam3` from the command line: `predict` and `eval` with the tiny random SAM 3, as a
preset (`--config tiny-random-sam3`, its own masks) and as `--detector` (SAM re-segments its boxes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cli_helpers import ShapesDataset, write_png
from PIL import Image

from grounded.cli import main
from grounded.pipeline import GroundedSAM


def test_predict_with_the_sam3_config_writes_its_own_masks(tmp_path: Path) -> None:
    write_png(tmp_path / "in" / "a.png", 0)
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "in"), "-p", "cat. dog", "-o", str(out), "-q",
                 "--config", "tiny-random-sam3", "--box-threshold", "0.15", "--max-detections", "3"])
    assert code == 0
    (record,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert record["model"]["sam"]["model_type"] == "none"
    assert record["model"]["detector"]["model"].startswith("tiny-random-sam3")
    rgb = np.asarray(Image.open(tmp_path / "in" / "a.png").convert("RGB"))
    direct = GroundedSAM.from_config("tiny-random-sam3", device="cpu").predict(
        rgb, "cat. dog", box_threshold=0.15, max_detections=3)
    assert [d["label"] for d in record["detections"]] == list(direct.data["class_name"])
    assert [d["area"] for d in record["detections"]] == [int(m.sum()) for m in direct.mask]


def test_predict_with_sam3_as_the_detector_keeps_the_config_sam(tmp_path: Path) -> None:
    write_png(tmp_path / "in" / "a.png", 1)
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "in"), "-p", "cat", "-o", str(out), "-q",
                 "--config", "tiny-random", "--detector", "tiny-random-sam3", "--box-threshold", "0.15",
                 "--text-threshold", "0", "--nms-iou", "1", "--max-detections", "2"])
    assert code == 0
    (record,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert record["model"]["sam"]["model_type"] == "tiny" and len(record["detections"]) == 2


def test_eval_with_the_sam3_config(shapes: ShapesDataset, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    code = main(["eval", "--images", str(shapes.images_dir), "--annotations", str(shapes.annotations),
                 "--max-images", "2", "--out", str(report_path), "-q", "--config", "tiny-random-sam3"])
    assert code == 0
    report = json.loads(report_path.read_text("utf-8"))
    assert report["models"]["sam"]["model_type"] == "none"
    assert "sam: none" in report["box_prompted_skipped"]
    assert report["skipped"] == []  # every image evaluated, none lost to the missing SAM
