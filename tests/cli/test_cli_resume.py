"""`grounded-sam predict` re-runs: resume, --overwrite, refusing other runs, crashes, sharding."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import write_png
from pycocotools.coco import COCO

import grounded.cli.run_folder
from grounded.cli import main

MODEL = ["--config", "tiny-random", "--box-threshold", "0", "--text-threshold", "0", "--max-detections", "2"]
NAMES = ["a.png", "b.png", "c/d.png", "c/e.png", "f.png"]


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    for seed, name in enumerate(NAMES):
        write_png(tmp_path / "photos" / name, seed, size=(24 + 4 * seed, 32))
    return tmp_path / "photos"


@pytest.fixture()
def predict_calls(shared_pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts model runs (the pipeline's own caches would hide repeats from its stats)."""
    calls: list[int] = []
    original = shared_pipeline.predict

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(shared_pipeline, "predict", counting)
    return calls


def run(photos: Path, out: Path, *extra: str, prompt: str = "cat. dog") -> int:
    return main(["predict", str(photos), "-p", prompt, "-o", str(out), "-q", *MODEL, *extra])


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]


def assert_each_image_once(out: Path) -> None:
    paths = [r["path"] for r in records(out)]
    assert sorted(paths) == NAMES
    coco = COCO(str(out / "annotations.json"))
    assert sorted(img["file_name"] for img in coco.imgs.values()) == NAMES
    assert sorted(coco.imgs) == list(range(1, len(NAMES) + 1))
    assert len(coco.anns) == sum(len(r["detections"]) for r in records(out))
    assert sorted(coco.anns) == list(range(1, len(coco.anns) + 1))


def test_second_run_processes_nothing_and_changes_no_byte(photos: Path, tmp_path: Path,
                                                          predict_calls: list[int]) -> None:
    out = tmp_path / "out"
    assert run(photos, out) == 0 and len(predict_calls) == 5
    before = snapshot(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert run(photos, out) == 0
    assert len(predict_calls) == 5  # nothing predicted again
    assert snapshot(out) == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # not even rewritten


def test_overwrite_starts_again(photos: Path, tmp_path: Path, predict_calls: list[int]) -> None:
    out = tmp_path / "out"
    assert run(photos, out) == 0
    stale = out / "masks" / "zz_stale_0_cat.png"
    stale.write_bytes(b"old")
    (out / "notes.md").write_text("user file", encoding="utf-8")
    assert run(photos, out, "--overwrite") == 0
    assert len(predict_calls) == 10
    assert not stale.exists() and (out / "notes.md").exists()  # only our outputs are deleted
    assert_each_image_once(out)


def test_other_prompt_or_options_are_refused(photos: Path, tmp_path: Path, shared_pipeline: Any,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run(photos, out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert run(photos, out, prompt="dog") == 2
    err = capsys.readouterr().err
    assert "different run" in err and "classes" in err and "--overwrite" in err
    assert run(photos, out, "--nms-iou", "0.9") == 2
    assert "nms_iou: 0.5 before, 0.9 now" in capsys.readouterr().err
    assert snapshot(out) == before
    assert run(photos, out, "--overwrite", prompt="dog") == 0
    assert {label for r in records(out) for label in r["classes"]} == {"dog"}


def test_foreign_outputs_and_concurrent_runs_are_refused(photos: Path, tmp_path: Path, shared_pipeline: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "predictions.jsonl").write_text("mine\n", encoding="utf-8")
    assert run(photos, foreign) == 2
    assert "not from a grounded-sam run" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    assert run(photos, tmp_path / "a_file") == 2
    assert "is a file" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert run(photos, busy) == 2
    assert "another grounded-sam run is writing" in capsys.readouterr().err


def test_crash_after_k_images_then_resume(photos: Path, tmp_path: Path, predict_calls: list[int],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    append = grounded.cli.run_folder._append_record
    appended: list[int] = []

    def crash_on_third(handle: Any, record: dict[str, Any]) -> None:
        if len(appended) == 2:  # the third image's masks and overlay are on disk, its record is not
            raise RuntimeError("simulated crash")
        appended.append(1)
        append(handle, record)

    monkeypatch.setattr(grounded.cli.run_folder, "_append_record", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(photos, out)
    assert [r["path"] for r in records(out)] == NAMES[:2]
    assert len(COCO(str(out / "annotations.json")).imgs) == 2  # written on the way out
    first_two = (out / "predictions.jsonl").read_bytes()

    monkeypatch.setattr(grounded.cli.run_folder, "_append_record", append)
    assert run(photos, out) == 0
    assert len(predict_calls) == 3 + 3  # 3 before the crash, then only the 3 unfinished images
    assert (out / "predictions.jsonl").read_bytes().startswith(first_two)
    assert_each_image_once(out)


def test_ctrl_c_keeps_finished_images(photos: Path, tmp_path: Path, shared_pipeline: Any,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    original = shared_pipeline.predict
    calls: list[int] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(shared_pipeline, "predict", interrupted)
    out = tmp_path / "out"
    assert run(photos, out) == 130
    assert "re-run the same command to resume" in capsys.readouterr().err
    assert len(COCO(str(out / "annotations.json")).imgs) == 2 == len(records(out))
    monkeypatch.setattr(shared_pipeline, "predict", original)
    assert run(photos, out) == 0
    assert_each_image_once(out)


def test_torn_last_line_is_dropped_and_redone(photos: Path, tmp_path: Path, predict_calls: list[int]) -> None:
    out = tmp_path / "out"
    assert run(photos, out) == 0
    lines = (out / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    (out / "predictions.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][:40])  # killed mid-write
    (out / "annotations.json").unlink()  # killed before the COCO file was written
    assert run(photos, out) == 0
    assert len(predict_calls) == 5 + 2
    assert_each_image_once(out)


def test_shards_cover_every_image_exactly_once(photos: Path, tmp_path: Path,
                                               predict_calls: list[int]) -> None:
    out = tmp_path / "out"
    per_shard = []
    for index in range(3):
        before = len(predict_calls)
        assert run(photos, out, "--shard", f"{index}/3") == 0
        per_shard.append(len(predict_calls) - before)
    assert sum(per_shard) == 5  # each image predicted in exactly one shard
    assert_each_image_once(out)
