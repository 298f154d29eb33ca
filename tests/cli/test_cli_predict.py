"""`grounded-sam predict` in-process: skip report, exit codes, progress, and the output files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import TtyStringIO, write_corrupt_jpeg, write_png
from PIL import Image
from pycocotools.coco import COCO

from grounded.cli import main
from grounded.io.export import detections_to_dict, read_mask_png

# Thresholds 0 make the untrained model keep its top queries, so every image has instances.
MODEL = ["--config", "tiny-random", "--box-threshold", "0", "--text-threshold", "0", "--max-detections", "3"]


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write_png(root / "a.png", 0)
    write_png(root / "sub" / "b.png", 1, size=(36, 48))
    write_png(root / "other" / "b.png", 2)  # same stem as sub/b.png
    write_corrupt_jpeg(root / "broken.jpg")
    (root / "fake.png").write_text("not an image", encoding="utf-8")
    (root / "notes.txt").write_text("not collected from a folder", encoding="utf-8")
    return root


def read_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]


def test_bad_files_are_skipped_and_reported(photos: Path, tmp_path: Path, shared_pipeline: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = TtyStringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    out = tmp_path / "out"
    code = main(["predict", str(photos), "--prompt", "Cat. dog", "--out", str(out), *MODEL])
    err = stderr.getvalue()
    assert code == 0
    assert "skipped 2 of 5 images:" in err
    assert "broken.jpg: could not decode" in err and "fake.png: could not decode" in err
    assert "notes.txt" not in err
    assert "5/5" in err  # the tqdm bar ran (stderr is a terminal here)
    assert [r["path"] for r in read_records(out)] == ["a.png", "other/b.png", "sub/b.png"]


def test_nothing_succeeded_exits_non_zero(tmp_path: Path, shared_pipeline: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write_corrupt_jpeg(tmp_path / "bad" / "x.jpg")
    (tmp_path / "bad" / "y.png").write_bytes(b"")
    code = main(["predict", str(tmp_path / "bad"), "-p", "cat", "-o", str(tmp_path / "out"), "-q", *MODEL])
    err = capsys.readouterr().err
    assert code == 1
    assert "skipped 2 of 2 images" in err and "none of the 2 images could be processed" in err
    assert "y.png: could not decode image 'y.png': the file is empty" in err


def test_coco_json_masks_and_jsonl_agree(photos: Path, tmp_path: Path, shared_pipeline: Any) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(photos), "-p", "cat. dog", "-o", str(out), "-q", *MODEL]) == 0
    coco = COCO(str(out / "annotations.json"))
    records = read_records(out)
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == ["cat", "dog"] and sorted(coco.cats) == [1, 2]
    assert sorted(coco.imgs) == [1, 2, 3]
    n_masks = 0
    for image_id, record in enumerate(records, start=1):
        info = coco.imgs[image_id]
        with Image.open(photos / record["path"]) as source:
            assert (info["width"], info["height"]) == source.size
        assert info["file_name"] == record["path"]
        anns = sorted(coco.imgToAnns[image_id], key=lambda a: a["id"])
        masks = record["outputs"]["masks"]
        assert len(anns) == len(record["detections"]) == len(masks) == 3
        for ann, det, mask_file in zip(anns, record["detections"], masks, strict=True):
            assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
            png = read_mask_png(out / mask_file)
            with Image.open(out / mask_file) as raw:
                assert raw.mode == "L" and set(np.unique(np.asarray(raw)).tolist()) <= {0, 255}
            assert np.array_equal(coco.annToMask(ann).astype(bool), png)
            assert ann["area"] == int(png.sum()) == det["area"]
            x0, y0, x1, y1 = det["box_xyxy"]
            assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.011)
            assert coco.cats[ann["category_id"]]["name"] == det["label"]
            assert ann["score"] == pytest.approx(det["score"]) and ann["mask_score"] == det["mask_score"]
            n_masks += 1
        overlay = Image.open(out / record["outputs"]["overlay"])
        assert overlay.size == (info["width"], info["height"]) and overlay.mode == "RGB"
    assert n_masks == len(coco.anns) == 9
    # same stem in two folders: separate mask files and overlays
    assert {Path(m).parent.name for r in records for m in r["outputs"]["masks"]} == {"masks", "sub", "other"}
    assert {r["outputs"]["overlay"] for r in records} == {"overlays/a.png", "overlays/other/b.png",
                                                          "overlays/sub/b.png"}


def test_jsonl_record_is_the_python_api_schema(photos: Path, tmp_path: Path, shared_pipeline: Any) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(photos / "a.png"), "-p", "cat. dog", "-o", str(out), "-q", *MODEL]) == 0
    (record,) = read_records(out)
    detections = shared_pipeline.predict(photos / "a.png", "cat. dog", box_threshold=0.0, text_threshold=0.0,
                                         max_detections=3)
    api = detections_to_dict(detections, image_size=(40, 56), classes=["cat", "dog"])
    assert {k: v for k, v in record.items() if k not in ("path", "source", "outputs", "model")} == api
    assert record["source"] == str((photos / "a.png").resolve())
    # every record names the models that ran, with their resolved device and dtype
    assert record["model"] == shared_pipeline.describe()
    assert record["model"]["sam"]["dtype"] == "float32" and record["model"]["detector"]["device"] == "cpu"
    coco = json.loads((out / "annotations.json").read_text())
    assert coco["info"]["models"] == shared_pipeline.describe()


def test_format_subset_and_txt_list(photos: Path, tmp_path: Path, shared_pipeline: Any,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    listing = photos / "todo.txt"
    listing.write_text("# two images and a stale line\nsub/b.png\n\na.png\ngone.png\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(["predict", str(listing), "-p", "cat", "-o", str(out), "--format", "png", "-q", *MODEL])
    err = capsys.readouterr().err
    assert code == 0
    assert "skipped 1 of 3 images" in err and "gone.png" in err and "does not exist" in err
    assert [r["path"] for r in read_records(out)] == ["a.png", "sub/b.png"]  # jsonl is always written
    assert not (out / "annotations.json").exists() and not (out / "overlays").exists()
    assert sorted(p.relative_to(out).as_posix() for p in (out / "masks").rglob("*.png")) == [
        "masks/a_0_cat.png", "masks/a_1_cat.png", "masks/a_2_cat.png",
        "masks/sub/b_0_cat.png", "masks/sub/b_1_cat.png", "masks/sub/b_2_cat.png"]


def test_no_detections_gives_empty_records_and_plain_overlays(photos: Path, tmp_path: Path,
                                                             shared_pipeline: Any) -> None:
    out = tmp_path / "out"
    code = main(["predict", str(photos / "a.png"), "-p", "cat", "-o", str(out), "-q",
                 "--config", "tiny-random", "--box-threshold", "1"])  # no box score exceeds 1
    assert code == 0
    (record,) = read_records(out)
    assert record["detections"] == [] and record["outputs"]["masks"] == []
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.imgs) == 1 and len(coco.anns) == 0
    with Image.open(photos / "a.png") as source, Image.open(out / "overlays" / "a.png") as overlay:
        assert np.array_equal(np.asarray(overlay), np.asarray(source.convert("RGB")))


def test_exif_rotated_jpeg_is_segmented_as_displayed(tmp_path: Path, shared_pipeline: Any) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (30, 50, 3), dtype=np.uint8)  # stored 50 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    (tmp_path / "in").mkdir()
    Image.fromarray(pixels).save(tmp_path / "in" / "phone.jpg", exif=exif)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "-p", "cat", "-o", str(out), "-q", *MODEL]) == 0
    (record,) = read_records(out)
    assert record["image"] == {"width": 30, "height": 50}  # as displayed: 30 wide, 50 tall
    for mask_file in record["outputs"]["masks"]:
        assert read_mask_png(out / mask_file).shape == (50, 30)
    assert COCO(str(out / "annotations.json")).imgs[1]["width"] == 30


@pytest.mark.parametrize("extra, message", [
    (["-p", "  . , "], "prompt is empty"),
    (["-p", "cat", "--box-threshold", "1.5"], "must be in [0, 1]"),
    (["-p", "cat", "--text-threshold", "-0.1"], "must be in [0, 1]"),
    (["-p", "cat", "--shard", "3/3"], "0-based"),
    (["-p", "cat", "--format", "coco,tiff"], "unknown format"),
    (["-p", "cat", "--config", "no-such-preset"], "neither a preset"),
    (["-p", "cat", "--max-detections", "0"], "must be >= 1"),
])
def test_usage_errors_exit_2_without_traceback(photos: Path, tmp_path: Path, extra: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    args = ["predict", str(photos), "-o", str(tmp_path / "out"), *extra]
    if "--config" not in extra:
        args += ["--config", "tiny-random"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_source_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tmp_path / "nope"), "-p", "cat", "-o", str(tmp_path / "o"),
                 "--config", "tiny-random"]) == 2
    assert "is not an existing file or folder" in capsys.readouterr().err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--help"]) == 0
    assert "--shard I/N" in capsys.readouterr().out


def test_symlink_loops_and_control_characters_are_reported_escaped(tmp_path: Path, shared_pipeline: Any,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_png(folder / "good.png", 1)
    (folder / "loop.png").symlink_to("loop.png")  # a symlink to itself: unreadable
    (folder / "missing.png").symlink_to("nowhere.png")  # dangling
    (folder / "forged\nskipped 0 of 0 images:.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "-p", "cat", "-o", str(out), *MODEL]) == 0
    err = capsys.readouterr().err
    assert "skipped 3 of 4 images:" in err
    assert "  loop.png: " in err and "  missing.png: " in err
    assert "'forged\\nskipped 0 of 0 images:.png'" in err  # repr-escaped: one line, visibly quoted
    assert "\nskipped 0 of 0 images:" not in err  # the crafted name forged no report line
    assert [r["path"] for r in read_records(out)] == ["good.png"]
