"""Checklist 1, 3, 4 and 5 end to end: every image mode and array layout gives masks aligned to the
image through the pipeline (not only through ``load_image``), and bad inputs stop one image, clearly,
in the Python API and the CLI alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rel_helpers import bad_image_files, random_rgb
from spies import model_calls, pillow_decodes

from grounded import GroundedSAM, ImageError

LOW = {"box_threshold": 0.0, "text_threshold": 0.0, "max_detections": 3}


def _file(mode: str, size: tuple[int, int], path: Path) -> Path:
    """An image file of Pillow ``mode`` and ``size`` (W, H) with some structure in it."""
    width, height = size
    rgb = random_rgb(sum(map(ord, mode)), height, width)
    gray = rgb[:, :, 0]
    if mode == "RGBA":
        image = Image.fromarray(np.dstack([rgb, gray]))
    elif mode == "LA":
        image = Image.fromarray(np.dstack([gray, rgb[:, :, 1]]))  # H x W x 2 uint8 -> "LA"
    elif mode == "P":
        image = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 0
    elif mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    elif mode == "I":
        image = Image.fromarray(gray.astype(np.int32) * 1000 - 90_000)
    elif mode == "F":
        image = Image.fromarray(gray.astype(np.float32) / 255)
    elif mode == "CMYK":
        image = Image.fromarray(rgb).convert("CMYK")
    else:
        image = Image.fromarray(rgb).convert(mode)
    suffix = {"CMYK": ".jpg", "I": ".tif", "F": ".tif"}.get(mode, ".png")
    path = path.with_suffix(suffix)
    image.save(path, **({"transparency": 0} if mode == "P" else {}))
    with Image.open(path) as saved:
        assert saved.mode.startswith(mode[:3]) and saved.size == size  # the file really has that mode
    return path


@pytest.mark.parametrize("mode, size", [
    ("RGB", (45, 31)), ("RGBA", (40, 30)), ("LA", (33, 27)), ("P", (38, 26)), ("L", (41, 29)),
    ("1", (37, 23)), ("I;16", (44, 28)), ("I", (36, 30)), ("F", (34, 22)), ("CMYK", (48, 32)),
    ("RGB", (1, 1)),
])
def test_every_mode_gives_masks_and_boxes_aligned_to_the_image(rel_pipe, tmp_path, mode, size):
    path = _file(mode, size, tmp_path / "image")
    det = rel_pipe.predict(path, "cat. dog", **LOW)
    width, height = size
    assert len(det) >= 1 and det.mask.shape == (len(det), height, width)
    assert (det.xyxy >= 0).all()
    assert (det.xyxy[:, [0, 2]] <= width).all() and (det.xyxy[:, [1, 3]] <= height).all()


@pytest.mark.parametrize("make", [
    lambda rgb: rgb.astype(np.float32) / 255,  # float in [0, 1]
    lambda rgb: rgb[:, :, 0],  # H x W
    lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),  # H x W x 4, opaque
    lambda rgb: np.ascontiguousarray(rgb.transpose(2, 0, 1)),  # C x H x W
    lambda rgb: rgb.astype(np.uint16) * 257,  # 16-bit
], ids=["float01", "HxW", "HxWx4", "CHW", "uint16"])
def test_numpy_layouts_are_converted_to_the_same_frame(rel_pipe, make):
    rgb = random_rgb(40, 30, 42)
    det = rel_pipe.predict(make(rgb), "cat", **LOW)
    assert det.mask.shape[1:] == (30, 42)


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 30, 42, 3), np.uint8), "batch"),
    (np.zeros((30, 42, 2), np.uint8), r"shape \(30, 42, 2\)"),
    (np.full((30, 42, 3), np.nan, np.float32), "NaN"),
    (np.empty((30, 42, 3), dtype=object), "dtype object"),
])
def test_unusable_arrays_are_refused_clearly_by_the_pipeline(rel_pipe, array, message):
    with pytest.raises(ImageError, match=message):
        rel_pipe.predict(array, "cat", **LOW)


def test_bad_files_fail_fast_and_clearly_and_the_next_image_works(rel_pipe, tmp_path, monkeypatch):
    decodes = pillow_decodes(monkeypatch)
    for name, message in bad_image_files(tmp_path / "bad").items():
        decodes.clear()
        calls = model_calls(rel_pipe)
        with pytest.raises(ImageError) as info:
            rel_pipe.predict(tmp_path / "bad" / name, "cat", **LOW)
        # fast without a stopwatch: stopped before any model, after at most one decode attempt
        assert model_calls(rel_pipe) == calls, name
        loads = [call for call in decodes if call.startswith("load ")]
        assert len(loads) <= 1 and (name != "bomb.png" or decodes == []), (name, decodes)
        assert message in str(info.value) and str(tmp_path) not in str(info.value)
        assert rel_pipe.predict(random_rgb(42, 20, 30), "cat", **LOW).mask.shape[1:] == (20, 30)


def test_the_cli_skips_bad_files_with_their_reason_and_finishes_the_rest(
        rel_pipe, tmp_path, monkeypatch, capsys):
    from grounded.cli import main

    expected = bad_image_files(tmp_path / "in")
    Image.fromarray(random_rgb(43, 26, 34)).save(tmp_path / "in" / "good.png")
    monkeypatch.setattr(GroundedSAM, "from_config", staticmethod(lambda *args, **kwargs: rel_pipe))
    detector_calls = rel_pipe.stats.detector_calls
    sources = [str(tmp_path / "in"), str(tmp_path / "in" / "logo.svg")]  # folders collect raster names only
    code = main(["predict", *sources, "-p", "cat", "-o", str(tmp_path / "out"), "-q",
                 "--config", "tiny-random", "--box-threshold", "0", "--text-threshold", "0"])
    assert rel_pipe.stats.detector_calls - detector_calls <= 1  # only good.png reached a model
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    for name, message in expected.items():
        line = next(line for line in err.splitlines() if line.strip().startswith(f"{name}:"))
        assert message in line
    lines = (tmp_path / "out" / "predictions.jsonl").read_text("utf-8").splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert record["path"] == "good.png" and record["image"] == {"width": 34, "height": 26}
