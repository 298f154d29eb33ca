"""The zip download of a session: COCO JSON, the page's JSON, lossless mask PNGs and the overlay."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from grounded.io.export import CocoBuilder, save_mask_png
from grounded.io.files import label_slug
from grounded.web.sessions import Session
from grounded.web.views import UNTRAINED_NOTE, result_json

__all__ = ["write_bundle"]


def write_bundle(session: Session, overlay: np.ndarray, folder: str | os.PathLike[str]) -> Path:
    """Write ``grounded-sam-results.zip`` into ``folder`` and return its path.

    Contents: ``coco.json`` (COCO instances, compressed RLE), ``result.json`` (:func:`result_json`),
    ``masks/NNN_<label>.png`` (one lossless 0/255 PNG per instance) and ``overlay.png``.
    """
    detections = session.detections
    zip_path = Path(folder) / "grounded-sam-results.zip"
    with tempfile.TemporaryDirectory(prefix="gsam-bundle-") as tmp:
        root = Path(tmp)
        description = "grounded-sam predictions" + (f" ({UNTRAINED_NOTE})" if session.untrained else "")
        coco = CocoBuilder(description=description)
        coco.add_categories(session.classes)  # category id = class_id + 1, in prompt order
        image_id = coco.add_image(session.image_name, session.image_size[1], session.image_size[0])
        coco.add_detections(image_id, detections)
        files = [coco.save(root / "coco.json")]
        (root / "result.json").write_text(json.dumps(result_json(session)), encoding="utf-8")
        files.append(root / "result.json")
        names = detections.data.get("class_name", [])
        for i, name in enumerate(names):
            mask_path = root / "masks" / f"{i:03d}_{label_slug(name)}.png"
            files.append(save_mask_png(detections.mask[i], mask_path))
        Image.fromarray(overlay).save(root / "overlay.png")
        files.append(root / "overlay.png")
        with zipfile.ZipFile(zip_path, "w") as bundle:
            for path in files:  # PNGs are already compressed: store them
                method = zipfile.ZIP_STORED if path.suffix == ".png" else zipfile.ZIP_DEFLATED
                bundle.write(path, path.relative_to(root).as_posix(), compress_type=method)
    return zip_path
