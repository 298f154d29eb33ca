"""`grounded-sam eval` end to end on the synthetic shapes data set with the tiny-random preset.

An untrained model's numbers are meaningless: these tests check structure, ranges and bookkeeping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import ShapesDataset

from grounded.cli import main
from grounded.cli.evaluate import METRIC_NAMES

MODEL = ["--config", "tiny-random", "--box-threshold", "0.1", "--text-threshold", "0.1",
         "--max-detections", "5", "-q"]


def _in_unit_range(value: float | None) -> bool:
    return value is None or 0.0 <= value <= 1.0


def test_eval_writes_the_report(shapes: ShapesDataset, tmp_path: Path, shared_pipeline: Any,
                                capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "reports" / "report.json"
    code = main(["eval", "--images", str(shapes.images_dir), "--annotations", str(shapes.annotations),
                 "--classes-from-categories", "--out", str(report_path), *MODEL])
    captured = capsys.readouterr()
    assert code == 0
    assert "AP50" in captured.out and "box-prompted mIoU" in captured.out
    assert "untrained" in captured.err
    report = json.loads(report_path.read_text("utf-8"))
    assert report["images"] == 4 and report["instances"] == 8
    assert report["classes"] == ["square", "disc"]
    assert report["untrained"] is True and report["config"] == "tiny-random"
    assert report["skipped"] == []
    for kind in ("bbox", "segm"):
        assert set(report[kind]) == set(METRIC_NAMES)
        assert all(_in_unit_range(v) for v in report[kind].values())
        assert report[kind]["AP"] is not None  # the ground truth has instances
    assert report["box_prompted"]["instances"] == 8
    assert 0.0 <= report["box_prompted"]["miou"] <= 1.0


def test_eval_with_a_prompt_subset_and_a_missing_image(shapes: ShapesDataset, tmp_path: Path,
                                                       shared_pipeline: Any,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (shapes.images_dir / "img_3.png").unlink()
    report_path = tmp_path / "report.json"
    code = main(["eval", "--images", str(shapes.images_dir), "--annotations", str(shapes.annotations),
                 "--prompt", "Disc", "--out", str(report_path), *MODEL])
    assert code == 0
    assert "img_3.png" in capsys.readouterr().err
    report = json.loads(report_path.read_text("utf-8"))
    assert report["classes"] == ["disc"]
    assert report["images"] == 3 and report["instances"] == 3  # discs of the 3 readable images
    assert report["box_prompted"]["instances"] == 3
    assert [s["file_name"] for s in report["skipped"]] == ["img_3.png"]


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "cat"], "not categories"),
    (["--prompt", "disc", "--classes-from-categories"], "not allowed with"),
    (["--box-threshold", "7"], "must be in [0, 1]"),
])
def test_eval_usage_errors(shapes: ShapesDataset, extra: list[str], message: str, shared_pipeline: Any,
                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--images", str(shapes.images_dir), "--annotations", str(shapes.annotations),
                 *MODEL, *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_eval_refuses_a_non_coco_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}', encoding="utf-8")
    assert main(["eval", "--images", str(tmp_path), "--annotations", str(bad), *MODEL]) == 2
    assert "not a COCO instances file" in capsys.readouterr().err
