"""`--detector NAME` on `grounded-sam predict` and `eval`: any registry kind replaces the detector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import ShapesDataset, write_png
from detector_kinds import save_tiny_mm

from grounded.cli import main


@pytest.fixture(scope="module")
def mm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_mm(tmp_path_factory.mktemp("tiny-mm"))


def test_predict_runs_the_named_detector(mm_folder: Path, tmp_path: Path) -> None:
    write_png(tmp_path / "in" / "a.png", 0)
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "in"), "-p", "cat. dog", "-o", str(out), "-q",
                 "--config", "tiny-random", "--detector", str(mm_folder),
                 "--box-threshold", "0", "--text-threshold", "0",
                 "--max-detections", "2"])
    assert code == 0
    (record,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert record["model"]["detector"]["model"] == str(mm_folder.resolve())
    assert len(record["detections"]) == 2
    run = json.loads((out / "run.json").read_text("utf-8"))
    assert run["config"]["detector"]["model"] == str(mm_folder)  # a resumed run must use the same detector


def test_eval_runs_the_named_detector(mm_folder: Path, shapes: ShapesDataset, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    code = main(["eval", "--images", str(shapes.images_dir), "--annotations", str(shapes.annotations),
                 "--max-images", "1", "--no-box-prompted", "--out", str(report_path), "-q",
                 "--config", "tiny-random", "--detector", str(mm_folder)])
    assert code == 0
    report = json.loads(report_path.read_text("utf-8"))
    assert report["models"]["detector"]["model"] == str(mm_folder.resolve())


def test_a_detector_that_cannot_load_fails_with_its_name(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    write_png(tmp_path / "in" / "a.png", 0)
    code = main(["predict", str(tmp_path / "in"), "-p", "cat", "-o", str(tmp_path / "out"), "-q",
                 "--config", "tiny-random", "--detector", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err
    assert code == 1 and "missing.pth" in err and "Traceback" not in err
