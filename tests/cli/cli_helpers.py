"""Helpers for the CLI tests: small image files and a synthetic COCO data set with known masks."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from grounded.io.export import mask_to_rle

HEIGHT, WIDTH = 64, 80
SQUARE = 20  # side of the square objects (pixels)
RADIUS = 9  # radius of the disc objects (pixels)


class TtyStringIO(io.StringIO):
    """A stderr stand-in that claims to be a terminal, so tqdm draws its bar."""

    def isatty(self) -> bool:
        return True


def write_png(path: Path, seed: int, size: tuple[int, int] = (40, 56)) -> Path:
    """A small random RGB PNG (H x W = ``size``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def write_corrupt_jpeg(path: Path) -> Path:
    """A JPEG cut after its header: PIL cannot decode it."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(buffer, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[:60])
    return path


def square_mask(x: int, y: int, *, side: int = SQUARE) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y : y + side, x : x + side] = True
    return mask


def disc_mask(cx: int, cy: int, *, radius: int = RADIUS) -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]  # H x W each
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2


def tight_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


@dataclass
class ShapesDataset:
    images_dir: Path
    annotations: Path
    gt: dict[str, Any]
    masks: dict[int, np.ndarray]  # annotation id -> H x W bool

    def anns(self, category_id: int) -> list[dict[str, Any]]:
        return [a for a in self.gt["annotations"] if a["category_id"] == category_id]


def make_shapes_dataset(root: Path, n_images: int = 4) -> ShapesDataset:
    """Images with one red square (category 1, "square") and one blue disc (category 3, "disc").

    Category ids are not contiguous on purpose: predictions must map to them by name.
    """
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    gt: dict[str, Any] = {"images": [], "annotations": [],
                          "categories": [{"id": 1, "name": "square"}, {"id": 3, "name": "disc"}]}
    masks: dict[int, np.ndarray] = {}
    for index in range(n_images):
        image_id = 10 + index
        square = square_mask(4 + 3 * index, 6 + 2 * index)
        disc = disc_mask(60 - index, 44 - index)
        pixels = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        pixels[square] = (230, 30, 30)
        pixels[disc] = (30, 30, 230)
        file_name = f"img_{index}.png"
        Image.fromarray(pixels).save(images_dir / file_name)
        gt["images"].append({"id": image_id, "file_name": file_name, "width": WIDTH, "height": HEIGHT})
        for category_id, mask in ((1, square), (3, disc)):
            ann_id = len(gt["annotations"]) + 1
            gt["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": category_id,
                "segmentation": mask_to_rle(mask), "area": int(mask.sum()), "bbox": tight_xywh(mask),
                "iscrowd": 0})
            masks[ann_id] = mask
    annotations = root / "instances.json"
    annotations.write_text(json.dumps(gt), encoding="utf-8")
    return ShapesDataset(images_dir, annotations, gt, masks)
