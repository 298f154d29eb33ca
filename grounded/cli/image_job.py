"""One image of a ``predict`` run: read -> predict -> outputs encoded in memory (``RenderedImage``).

Both engines run exactly this function, the local engine in its own process and the Ray engine inside
each worker; only the driver writes files (``run_folder.RunFolder.commit``). Encoding the mask PNGs and
the overlay here keeps that CPU work on the workers and sends the driver compact bytes to write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grounded.cli.options import BatchOptions
from grounded.io.annotate import annotate
from grounded.io.export import detections_to_dict, encode_mask_png
from grounded.io.files import encode_png
from grounded.io.images import load_image
from grounded.io.sources import ImageSource
from grounded.io.uris import open_uri

__all__ = ["RenderedImage", "render_image"]


@dataclass(frozen=True)
class RenderedImage:
    """The outputs of one image, ready to write, or the reason it was skipped.

    Attributes:
        name: the image's name (COCO ``file_name``); ``source``: the absolute path or URI read.
        payload: ``detections_to_dict`` of the predictions (``None`` when skipped).
        mask_pngs: one 0/255 PNG per detection, in ``payload["detections"]`` order (``--format png``).
        overlay_png: the drawn overlay as PNG bytes (``--format overlay``), else ``None``.
        error: why the image was skipped (it could not be read or predicted), else ``None``.
        models: ``GroundedSAM.describe()`` of the pipeline that ran, when it ran in another process
            (a Ray worker); ``None`` means the caller's own pipeline.
    """

    name: str
    source: str
    payload: dict[str, Any] | None = None
    mask_pngs: tuple[bytes, ...] = ()
    overlay_png: bytes | None = None
    error: str | None = None
    models: dict[str, Any] | None = None

    def pack(self) -> tuple[str, bytes]:
        """(JSON metadata, the PNGs end to end): how a Ray worker sends it; no pickle on the way."""
        sizes = [len(png) for png in self.mask_pngs]
        meta = {"name": self.name, "source": self.source, "payload": self.payload, "error": self.error,
                "models": self.models, "mask_sizes": sizes,
                "overlay_size": None if self.overlay_png is None else len(self.overlay_png)}
        return json.dumps(meta), b"".join([*self.mask_pngs, self.overlay_png or b""])

    @classmethod
    def unpack(cls, meta_json: str, blob: bytes) -> RenderedImage:
        """Inverse of :meth:`pack`."""
        meta = json.loads(meta_json)
        pngs, offset = [], 0
        for size in meta["mask_sizes"]:
            pngs.append(blob[offset : offset + size])
            offset += size
        overlay = None if meta["overlay_size"] is None else blob[offset : offset + meta["overlay_size"]]
        return cls(name=meta["name"], source=meta["source"], payload=meta["payload"], mask_pngs=tuple(pngs),
                   overlay_png=overlay, error=meta["error"], models=meta["models"])


def render_image(pipe: Any, image: ImageSource, options: BatchOptions) -> RenderedImage:
    """Predict one image with ``pipe`` (a ``GroundedSAM``) and encode its outputs.

    A bad image (missing, corrupt, too large) or a prediction error gives a ``RenderedImage`` with
    ``error`` set, so the run reports it and goes on; errors while encoding are bugs and propagate.
    """
    name, source = image.name, image.location
    try:
        readable = image.path if image.uri is None else open_uri(image.uri)
        rgb = load_image(readable, max_pixels=pipe.config.max_pixels)  # H x W x 3 uint8
        detections = pipe.predict(
            rgb, options.classes, box_threshold=options.box_threshold,
            text_threshold=options.text_threshold, nms_iou=options.nms_iou,
            max_detections=options.max_detections, multimask=options.multimask)
        overlay = annotate(rgb, detections) if "overlay" in options.formats else None
    except (ValueError, RuntimeError, OSError) as exc:
        return RenderedImage(name=name, source=source, error=str(exc) or type(exc).__name__)
    payload = detections_to_dict(detections, image_size=rgb.shape[:2], classes=options.classes)
    masks: tuple[bytes, ...] = ()
    if "png" in options.formats and detections.mask is not None:
        masks = tuple(encode_mask_png(mask) for mask in detections.mask)  # one H x W mask each
    return RenderedImage(name=name, source=source, payload=payload, mask_pngs=masks,
                         overlay_png=None if overlay is None else encode_png(overlay))
