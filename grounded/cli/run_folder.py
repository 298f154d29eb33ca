"""The output folder of a ``predict`` run: what is finished, and the one way to add an image to it.

Output folder layout (``DIR``)::

    DIR/run.json            what produced the folder: prompt classes, model config, thresholds, formats
    DIR/predictions.jsonl   one line per finished image (always written: it is the resume record)
    DIR/annotations.json    COCO instance segmentation, rebuilt from predictions.jsonl  (--format coco)
    DIR/masks/<stem>_<k>_<label>.png   lossless 0/255 mask of instance k               (--format png)
    DIR/overlays/<stem>.png            image with masks, boxes and labels drawn    (--format overlay)

``<stem>`` is the image's path relative to its source root without the extension, so images with
the same file name in different sub-folders get different outputs (``masks/a/cat_0_dog.png``); a
clash that remains (``cat.jpg`` and ``cat.png``, or equal names from two sources) adds the extension
and then a counter (``cat_png``, ``cat_png_2``). Stems are given out in the images' sorted order
before any image is processed (a skipped image keeps its stem reserved), so they do not depend on
the order in which images finish: the local and the Ray engine name every file alike.

Crash safety: an image's mask and overlay files are written first (each atomically), then its line
is appended to ``predictions.jsonl`` and fsync'ed. A run killed at any point therefore resumes with
every finished image exactly once; a torn last line is dropped and that image is redone.

``annotations.json`` lists the images sorted by (``file_name``, source path) with ids 1..N in that
order, and their annotations in the same order, whatever order they finished in, so both engines
and any resumed run give the same ids. It is rebuilt from the records at start-up, every
``COCO_FLUSH_SECONDS`` (or ten times as long as the last rewrite took, if longer) and at the end
(also after an error or Ctrl-C), through a temporary file and ``os.replace``, and only when its
content changed, so a run with nothing to do changes no byte.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from grounded.cli.image_job import RenderedImage
from grounded.cli.options import BatchOptions
from grounded.config import PipelineConfig, config_to_dict
from grounded.io.export import CocoBuilder, detections_from_dict
from grounded.io.files import atomic_write_bytes, label_slug
from grounded.io.sources import ImageSource

__all__ = [
    "COCO_FLUSH_SECONDS",
    "OutputConflictError",
    "RunFolder",
    "check_output_dir",
    "open_run_folder",
    "run_identity",
]

logger = logging.getLogger(__name__)

RUN_FILE, RECORDS_FILE, COCO_FILE, MASK_DIR, OVERLAY_DIR = (
    "run.json", "predictions.jsonl", "annotations.json", "masks", "overlays")
_OUTPUTS = (RUN_FILE, RECORDS_FILE, COCO_FILE, MASK_DIR, OVERLAY_DIR)
COCO_FLUSH_SECONDS = 60.0
# Config fields that cannot change the predictions; a run may resume with other values.
_NOT_IDENTITY = ("name", "device", "cache_bytes")


class OutputConflictError(RuntimeError):
    """DIR holds outputs this run must not touch (another prompt/config, or foreign files)."""


class RunFolder:
    """An open, locked output folder (from :func:`open_run_folder`)."""

    def __init__(self, out: Path, records: list[dict[str, Any]], records_file: BinaryIO,
                 coco: _CocoFile | None, models: dict[str, Any] | None) -> None:
        self.out = out
        self.records = records
        self._records_file = records_file
        self._coco = coco
        self._models = models

    def plan(self, images: Sequence[ImageSource]) -> list[tuple[ImageSource, str]]:
        """The images not finished yet, in the given (sorted) order, each with its output stem."""
        done = {record["source"] for record in self.records}
        claimed = {record["outputs"]["stem"] for record in self.records}
        return [(image, _claim_stem(image, claimed)) for image in images if image.location not in done]

    def commit(self, rendered: RenderedImage, stem: str) -> dict[str, Any]:
        """Write one image's files, then its fsync'ed record (the image is then finished); return it."""
        if rendered.payload is None:
            raise ValueError(f"{rendered.name} was skipped ({rendered.error}); there is nothing to commit")
        masks: list[str] = []
        for k, (png, row) in enumerate(zip(rendered.mask_pngs, rendered.payload["detections"], strict=False)):
            relative = f"{MASK_DIR}/{stem}_{k}_{label_slug(str(row['label']))}.png"
            atomic_write_bytes(self.out / relative, png)
            masks.append(relative)
        overlay = None
        if rendered.overlay_png is not None:
            overlay = f"{OVERLAY_DIR}/{stem}.png"
            atomic_write_bytes(self.out / overlay, rendered.overlay_png)
        models = rendered.models or self._models  # which models ran, on which device, in which dtype
        record = {"path": rendered.name, "source": rendered.source, **rendered.payload,
                  "outputs": {"stem": stem, "masks": masks, "overlay": overlay}, "model": models}
        _append_record(self._records_file, record)
        self.records.append(record)
        if self._coco is not None:  # from the record, exactly as a later run rebuilds it
            self._coco.models = models
            self._coco.add(record)
            self._coco.flush(force=False)
        return record


@contextmanager
def open_run_folder(out_dir: str | os.PathLike[str], identity: dict[str, Any], *, classes: Sequence[str],
                    formats: frozenset[str], models: dict[str, Any] | None,
                    overwrite: bool) -> Iterator[RunFolder]:
    """Lock ``out_dir`` (created if missing), check it holds this run or none, load its records.

    ``models`` (``GroundedSAM.describe()``) goes into the records and ``annotations.json``'s info;
    ``None`` when the models run elsewhere (Ray workers): each result then brings its own, and until
    the first one arrives the info keeps the last record's. ``annotations.json`` is written on the
    way out, also after an error or Ctrl-C.

    Raises:
        OutputConflictError: another run's outputs (and not ``overwrite``), or another writer.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        if overwrite:
            _remove_outputs(out)
        check_output_dir(out, identity, overwrite=False)
        if not (out / RUN_FILE).exists():
            atomic_write_bytes(out / RUN_FILE, (json.dumps(identity, indent=2) + "\n").encode("utf-8"))
        records = _load_records(out / RECORDS_FILE)
        if models is None and records:
            models = records[-1].get("model")
        coco = _CocoFile(out / COCO_FILE, classes, records, models=models) if "coco" in formats else None
        try:
            with open(out / RECORDS_FILE, "ab") as records_file:
                yield RunFolder(out, records, records_file, coco, models)
        finally:
            if coco is not None:
                coco.flush(force=True)


# ------------------------------------------------------------------------------ records
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
    """``annotations.json``: per-image COCO entries kept in memory, written sorted, atomically, when
    due and changed. Image and annotation ids are given out at write time in sorted order."""

    def __init__(self, path: Path, classes: Sequence[str], records: Sequence[dict[str, Any]], *,
                 models: dict[str, Any] | None) -> None:
        self.path = path
        self.classes = list(classes)
        self.models = models
        # (file_name, source) -> (image entry, its annotations with the category *name* in category_id)
        self.entries: dict[tuple[str, str], tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for record in records:
            self.add(record)
        self.last_flush = 0.0
        self.interval = COCO_FLUSH_SECONDS

    def add(self, record: dict[str, Any]) -> None:
        rows = record["detections"]
        # With masks, the record already holds what COCO needs from them (the RLE CocoBuilder would
        # encode, and area = its pixel count): skip decoding and re-encoding every mask (~0.1 s for
        # 20 masks of 640 x 480), which would make the driver the bottleneck of a Ray run.
        reuse_masks = bool(rows) and all(row.get("mask") is not None for row in rows)
        if reuse_masks:
            record = {**record, "detections": [{**row, "mask": None} for row in rows]}
        builder = CocoBuilder()  # one image: the same conversion a whole-run builder applies
        builder.add_categories(self.classes)
        image_id = builder.add_image(record["path"], width=record["image"]["width"],
                                     height=record["image"]["height"])
        builder.add_detections(image_id, detections_from_dict(record))
        data = builder.to_dict()
        names = {category["id"]: category["name"] for category in data["categories"]}
        annotations = [{**a, "category_id": names[a["category_id"]]} for a in data["annotations"]]
        if reuse_masks:
            for annotation, row in zip(annotations, rows, strict=True):
                annotation["segmentation"], annotation["area"] = row["mask"], int(row["area"])
        self.entries[(record["path"], record["source"])] = (data["images"][0], annotations)

    def to_dict(self) -> dict[str, Any]:
        builder = CocoBuilder(description="grounded-sam predict", models=self.models)
        category_of = builder.add_categories(self.classes)  # ids 1..K in prompt order
        images, annotations = [], []
        for key in sorted(self.entries):
            image, entries = self.entries[key]
            images.append({**image, "id": len(images) + 1})
            for annotation in entries:
                if annotation["category_id"] not in category_of:  # a label outside the prompt
                    category_of = builder.add_categories([annotation["category_id"]])
                annotations.append({**annotation, "id": len(annotations) + 1, "image_id": len(images),
                                    "category_id": category_of[annotation["category_id"]]})
        return {**builder.to_dict(), "images": images, "annotations": annotations}

    def flush(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_flush < self.interval:
            return
        text = json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8")
        if not (self.path.exists() and self.path.read_bytes() == text):
            atomic_write_bytes(self.path, text)
        self.last_flush = time.monotonic()
        # A huge run (10^6 images) takes seconds to rewrite: spend at most ~10 % of the time on it.
        self.interval = max(COCO_FLUSH_SECONDS, 10 * (self.last_flush - now))


def _claim_stem(image: ImageSource, claimed: set[str]) -> str:
    stem = image.output_stem
    candidates = [stem, f"{stem}_{image.path.suffix.lstrip('.').lower() or 'noext'}"]
    candidates += [f"{candidates[1]}_{n}" for n in range(2, len(claimed) + 3)]
    chosen = next(c for c in candidates if c not in claimed)
    claimed.add(chosen)
    return chosen


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
