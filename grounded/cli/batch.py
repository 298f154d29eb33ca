"""Batch prediction over many images into one output folder, resumable and never clobbering.

Output folder layout (``DIR``)::

    DIR/run.json            what produced the folder: prompt classes, model config, thresholds, formats
    DIR/predictions.jsonl   one line per finished image (always written: it is the resume record)
    DIR/annotations.json    COCO instance segmentation, rebuilt from predictions.jsonl  (--format coco)
    DIR/masks/<stem>_<k>_<label>.png   lossless 0/255 mask of instance k               (--format png)
    DIR/overlays/<stem>.png            image with masks, boxes and labels drawn    (--format overlay)

``<stem>`` is the image's path relative to its source root without the extension, so images with
the same file name in different sub-folders get different outputs (``masks/a/cat_0_dog.png``); a
clash that remains (``cat.jpg`` and ``cat.png``, or equal names from two sources) adds the extension
and then a counter (``cat_png``, ``cat_png_2``).

Crash safety: an image's mask and overlay files are written first (each atomically), then its line
is appended to ``predictions.jsonl`` and fsync'ed. A run killed at any point therefore resumes with
every finished image exactly once; a torn last line is dropped and that image is redone.
``annotations.json`` is rebuilt from the records at start-up, every ``COCO_FLUSH_SECONDS`` and at the
end (also after an error or Ctrl-C), through a temporary file and ``os.replace``, and only when its
content changed, so a run with nothing to do leaves every file byte-identical.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import supervision as sv
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from grounded.config import PipelineConfig, config_to_dict
from grounded.io.annotate import annotate
from grounded.io.export import CocoBuilder, detections_from_dict, detections_to_dict, save_mask_png
from grounded.io.files import atomic_write_bytes, label_slug, save_png
from grounded.io.images import load_image
from grounded.io.sources import ImageSource, shown

__all__ = [
    "FORMATS",
    "BatchOptions",
    "BatchResult",
    "OutputConflictError",
    "check_output_dir",
    "run_batch",
    "run_identity",
]

logger = logging.getLogger(__name__)

FORMATS = ("coco", "png", "overlay", "jsonl")
RUN_FILE, RECORDS_FILE, COCO_FILE, MASK_DIR, OVERLAY_DIR = (
    "run.json", "predictions.jsonl", "annotations.json", "masks", "overlays")
_OUTPUTS = (RUN_FILE, RECORDS_FILE, COCO_FILE, MASK_DIR, OVERLAY_DIR)
COCO_FLUSH_SECONDS = 60.0
# Config fields that cannot change the predictions; a run may resume with other values.
_NOT_IDENTITY = ("name", "device", "cache_bytes")


class OutputConflictError(RuntimeError):
    """DIR holds outputs this run must not touch (another prompt/config, or foreign files)."""


@dataclass(frozen=True)
class BatchOptions:
    """What one batch run predicts and writes; ``None`` thresholds fall back to the pipeline config."""

    classes: list[str]
    formats: frozenset[str] = frozenset(FORMATS)
    box_threshold: float | None = None
    text_threshold: float | None = None
    nms_iou: float | None = None
    max_detections: int | None = None
    multimask: bool | None = None
    overwrite: bool = False


@dataclass
class BatchResult:
    """Counts of one run. ``failed`` holds (image name, reason) for every skipped image."""

    selected: int = 0
    already_done: int = 0
    succeeded: int = 0
    instances: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when images failed and none of the selected images is finished (now or before), else 0."""
        return 1 if self.failed and self.succeeded == 0 and self.already_done == 0 else 0


def run_batch(pipe: Any, images: Sequence[ImageSource], out_dir: str | os.PathLike[str],
              options: BatchOptions, *, progress: bool = True) -> BatchResult:
    """Predict every image not yet finished in ``out_dir`` and write the requested formats.

    Args:
        pipe: a ``GroundedSAM`` (loaded once by the caller).
        images: from ``grounded.io.sources.expand_sources`` (and ``select_shard``), in processing order.
        out_dir: the output folder, created if missing.
        options: classes, formats, threshold overrides, ``overwrite``.
        progress: show a tqdm bar on stderr (only when it is a terminal).

    Raises:
        OutputConflictError: ``out_dir`` holds another run's outputs (different prompt, config or
            formats) or foreign files with our names, and ``options.overwrite`` is False.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    identity = run_identity(pipe.config, options)
    result = BatchResult(selected=len(images))
    with _exclusive(out):
        if options.overwrite:
            _remove_outputs(out)
        check_output_dir(out, identity, overwrite=False)
        if not (out / RUN_FILE).exists():
            atomic_write_bytes(out / RUN_FILE, (json.dumps(identity, indent=2) + "\n").encode("utf-8"))
        records = _load_records(out / RECORDS_FILE)
        done = {record["source"] for record in records}
        claimed = {record["outputs"]["stem"] for record in records}
        todo = [image for image in images if str(image.path) not in done]
        result.already_done = len(images) - len(todo)
        models = pipe.describe()
        coco = (_CocoFile(out / COCO_FILE, options.classes, records, models=models)
                if "coco" in options.formats else None)
        if result.already_done:
            logger.info("%d of %d images already done in %s; %d to do",
                        result.already_done, len(images), out, len(todo))
        try:
            with open(out / RECORDS_FILE, "ab") as records_file, logging_redirect_tqdm(), tqdm(
                total=len(todo), unit="img", file=sys.stderr, disable=None if progress else True,
                dynamic_ncols=True,
            ) as bar:
                for image in todo:
                    _process_one(pipe, image, out, options, claimed, records_file, coco, result, models)
                    bar.update(1)
        finally:
            if coco is not None:
                coco.flush(force=True)
    return result


def _process_one(pipe: Any, image: ImageSource, out: Path, options: BatchOptions, claimed: set[str],
                 records_file: BinaryIO, coco: _CocoFile | None, result: BatchResult,
                 models: dict[str, Any]) -> None:
    # Reading and predicting may fail for one bad image: report it, go on. Writing may not (disk full).
    try:
        rgb = load_image(image.path, max_pixels=pipe.config.max_pixels)
        detections = pipe.predict(
            rgb, options.classes, box_threshold=options.box_threshold,
            text_threshold=options.text_threshold, nms_iou=options.nms_iou,
            max_detections=options.max_detections, multimask=options.multimask)
        overlay = annotate(rgb, detections) if "overlay" in options.formats else None
    except (ValueError, RuntimeError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        result.failed.append((image.name, reason))
        logger.warning("skipping %s: %s", shown(image.name), shown(reason))
        return
    stem = _claim_stem(image, claimed)
    record = _write_outputs(out, image, stem, rgb.shape[:2], detections, overlay, options)
    record["model"] = models  # which models ran, on which device, in which dtype
    _append_record(records_file, record)
    result.succeeded += 1
    result.instances += len(detections)
    if coco is not None:  # from the record, exactly as a later run rebuilds it (rounded boxes)
        coco.add(record["path"], rgb.shape[:2], detections_from_dict(record))
        coco.flush(force=False)


def _write_outputs(out: Path, image: ImageSource, stem: str, size: tuple[int, int],
                   detections: sv.Detections, overlay: np.ndarray | None,
                   options: BatchOptions) -> dict[str, Any]:
    """Write masks and overlay of one image (atomically); return its JSONL record."""
    masks: list[str] = []
    if "png" in options.formats and detections.mask is not None:
        for k, (mask, label) in enumerate(zip(detections.mask, detections.data["class_name"], strict=True)):
            relative = f"{MASK_DIR}/{stem}_{k}_{label_slug(str(label))}.png"
            save_mask_png(mask, out / relative)
            masks.append(relative)
    overlay_path = None
    if overlay is not None:
        overlay_path = f"{OVERLAY_DIR}/{stem}.png"
        save_png(overlay, out / overlay_path)
    payload = detections_to_dict(detections, image_size=size, classes=options.classes)
    return {"path": image.name, "source": str(image.path), **payload,
            "outputs": {"stem": stem, "masks": masks, "overlay": overlay_path}}


def _append_record(records_file: BinaryIO, record: dict[str, Any]) -> None:
    """One line per image, in one write, flushed and fsync'ed: the image is then 'finished'."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    records_file.write(line.encode("utf-8"))
    records_file.flush()
    os.fsync(records_file.fileno())


def _load_records(path: Path) -> list[dict[str, Any]]:
    """Finished images from ``predictions.jsonl``; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, offset = [], 0
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]  # what follows the last newline: b"" or a torn line
    for number, line in enumerate(lines, start=1):
        if not line:
            break
        if not line.endswith(b"\n"):
            logger.warning("dropping the unfinished last line of %s (an interrupted run); that image is "
                           "processed again", path)
            with open(path, "r+b") as handle:
                handle.truncate(offset)
            break
        try:
            record = json.loads(line)
            record["source"], record["outputs"]["stem"]  # noqa: B018 - required keys
        except (ValueError, KeyError, TypeError):
            raise OutputConflictError(
                f"{path} line {number} is not a grounded-sam record; use another --out or --overwrite"
            ) from None
        records.append(record)
        offset += len(line)
    return records


class _CocoFile:
    """``annotations.json``, kept in memory and written atomically when due and changed."""

    def __init__(self, path: Path, classes: Sequence[str], records: Sequence[dict[str, Any]], *,
                 models: dict[str, Any]) -> None:
        self.path = path
        self.builder = CocoBuilder(description="grounded-sam predict", models=models)
        self.builder.add_categories(classes)  # category ids 1..K in prompt order
        for record in records:
            size = (record["image"]["height"], record["image"]["width"])
            self.add(record["path"], size, detections_from_dict(record))
        self.last_flush = 0.0

    def add(self, file_name: str, size: tuple[int, int], detections: sv.Detections) -> None:
        image_id = self.builder.add_image(file_name, width=size[1], height=size[0])
        self.builder.add_detections(image_id, detections)

    def flush(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_flush < COCO_FLUSH_SECONDS:
            return
        self.last_flush = now
        text = json.dumps(self.builder.to_dict(), ensure_ascii=False).encode("utf-8")
        if self.path.exists() and self.path.read_bytes() == text:
            return
        atomic_write_bytes(self.path, text)


# ------------------------------------------------------------------------------ run identity
def run_identity(config: PipelineConfig, options: BatchOptions) -> dict[str, Any]:
    """Everything that changes the outputs (``run.json``); a folder resumes only under the same one."""
    effective = dataclasses.replace(
        config,
        box_threshold=_pick(options.box_threshold, config.box_threshold),
        text_threshold=_pick(options.text_threshold, config.text_threshold),
        nms_iou=_pick(options.nms_iou, config.nms_iou),
        max_detections=_pick(options.max_detections, config.max_detections),
        multimask=_pick(options.multimask, config.multimask),
    )
    settings = {k: v for k, v in config_to_dict(effective).items() if k not in _NOT_IDENTITY}
    identity = {"version": 1, "classes": list(options.classes), "config": settings,
                "formats": sorted(options.formats | {"jsonl"})}
    return json.loads(json.dumps(identity))  # tuples -> lists, as read back from run.json


def _pick(override: Any, default: Any) -> Any:
    return default if override is None else override


def check_output_dir(out_dir: str | os.PathLike[str], identity: dict[str, Any], *, overwrite: bool) -> None:
    """Raise ``OutputConflictError`` unless ``out_dir`` is new, empty of our outputs, or a run with
    the same identity (resume). ``overwrite`` allows anything. Changes nothing on disk."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputConflictError(f"--out {str(out)!r} is a file; give a folder for the outputs")
    if overwrite or not out.is_dir():
        return
    run_file = out / RUN_FILE
    if not run_file.exists():
        present = [name for name in _OUTPUTS if (out / name).exists()]
        if present:
            raise OutputConflictError(
                f"{out} already holds {', '.join(present)} but no {RUN_FILE}, so they are not from a "
                "grounded-sam run this command can resume; choose another --out, or pass --overwrite "
                "to delete them")
        return
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except ValueError:
        previous = {}
    if previous != identity:
        differences = _differences(previous, identity)
        raise OutputConflictError(
            f"{out} holds outputs of a different run ({'; '.join(differences)}); re-run with the same "
            "prompt and options to resume it, choose another --out, or pass --overwrite to replace it")


def _differences(before: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        keys = sorted(set(before) | set(now))
        return [d for k in keys for d in _differences(before.get(k), now.get(k), f"{prefix}{k}.")]
    if before != now:
        return [f"{prefix.rstrip('.') or 'run'}: {before!r} before, {now!r} now"]
    return []


def _remove_outputs(out: Path) -> None:
    """``--overwrite``: delete the files and folders a run writes (nothing else in ``out``)."""
    for name in _OUTPUTS:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Refuse a second concurrent run on the same folder (advisory lock, released if killed)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; run one job per folder
        yield
        return
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputConflictError(
                f"another grounded-sam run is writing to {out}; wait for it, or give each concurrent "
                "run (e.g. each --shard) its own --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ file helpers
def _claim_stem(image: ImageSource, claimed: set[str]) -> str:
    stem = image.output_stem
    candidates = [stem, f"{stem}_{image.path.suffix.lstrip('.').lower() or 'noext'}"]
    candidates += [f"{candidates[1]}_{n}" for n in range(2, len(claimed) + 3)]
    chosen = next(c for c in candidates if c not in claimed)
    claimed.add(chosen)
    return chosen
