"""SAM prompted by the caller: given boxes (``eval``), clicks on an instance, one new object (the page).

:class:`SamPrompts` is mixed into :class:`grounded.pipeline.GroundedSAM`; every call decodes from the
pipeline's cached image embedding (``_embedding``) under its SAM lock, so no encoder runs again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import supervision as sv
import torch

from grounded.io.images import image_content_hash, load_image
from grounded.masks import CompactMask, replace_mask

__all__ = ["SamPrompts"]


class SamPrompts:
    """Box, click and box+click prompts to the pipeline's SAM (needs ``sam``, not ``sam: none``).

    Uses the host's ``config``, ``sam``, ``stats``, ``_embedding``, ``_masks_for_boxes``, ``_predictor``
    and ``_sam_lock`` (see :class:`grounded.pipeline.GroundedSAM`).
    """

    def segment_boxes(
        self, image: Any, boxes_xyxy: np.ndarray | Sequence[Sequence[float]], *, multimask: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """SAM masks for given boxes (no detector): the box-prompted protocol used by ``eval``.

        ``boxes_xyxy`` is N x 4 in absolute pixels of the original image. Returns (masks N x H x W
        bool, mask scores N float32). All boxes go through the decoder in one call.
        """
        self._require_sam("segmenting given boxes")
        rgb = load_image(image, max_pixels=self.config.max_pixels)
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)  # N x 4
        height, width = rgb.shape[:2]
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        masks, scores = self._masks_for_boxes(rgb, image_content_hash(rgb), boxes, multimask=multimask)
        return masks.to_dense(), scores

    def refine(
        self,
        image: Any,
        detections: sv.Detections,
        index: int,
        points_xy: np.ndarray | Sequence[Sequence[float]],
        point_labels: np.ndarray | Sequence[int],
    ) -> sv.Detections:
        """Re-decode instance ``index`` with extra clicks, from the cached image embedding.

        ``points_xy`` is K x 2 in absolute pixels of the original image; ``point_labels`` is K with
        1 = foreground, 0 = background. Returns a copy of ``detections`` with that mask replaced.
        """
        self._require_sam("refining a mask with clicks")
        if not 0 <= index < len(detections):
            raise ValueError(f"instance index {index} is out of range for {len(detections)} detections")
        points = np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)  # K x 2
        labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)  # K
        if len(points) != len(labels):
            raise ValueError(f"got {len(points)} points but {len(labels)} point labels")
        rgb = load_image(image, max_pixels=self.config.max_pixels)
        height, width = rgb.shape[:2]
        if detections.mask is not None and detections.mask.shape[1:] != (height, width):
            raise ValueError("detections were made for an image of another size")
        masks, scores = self.segment_prompt(rgb, points_xy=points, point_labels=labels,
                                            box_xyxy=detections.xyxy[index])  # 1 x H x W, 1
        refined = detections[np.arange(len(detections))]  # supervision's indexing copies every field
        new_mask = masks[0]  # H x W bool
        if isinstance(refined.mask, CompactMask):
            refined.mask = replace_mask(refined.mask, index, new_mask)
        else:
            if refined.mask is None:
                refined.mask = np.zeros((len(refined), height, width), dtype=bool)
            refined.mask[index] = new_mask
        refined.data["mask_score"][index] = float(scores[0])
        return refined

    def segment_prompt(
        self,
        image: Any,
        *,
        points_xy: np.ndarray | Sequence[Sequence[float]] | None = None,
        point_labels: np.ndarray | Sequence[int] | None = None,
        box_xyxy: np.ndarray | Sequence[float] | None = None,
        multimask: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """SAM masks for ONE prompt (clicks and/or a box), decoded from the cached image embedding.

        ``points_xy`` is K x 2 and ``box_xyxy`` 4 values, absolute pixels of the original image;
        ``point_labels`` is K with 1 = foreground, 0 = background. Returns (masks C x H x W bool,
        scores C float32), C = 3 candidates sorted by SAM's predicted IoU (best first) with
        ``multimask``, else 1. The page's "add a missed object" and its candidate picker use this.
        """
        if points_xy is None and box_xyxy is None:
            raise ValueError("segment_prompt needs points, a box or both")
        self._require_sam("adding or refining an instance with clicks or a box")
        rgb = load_image(image, max_pixels=self.config.max_pixels)
        height, width = rgb.shape[:2]
        embedding = self._embedding(rgb, image_content_hash(rgb))
        with self._sam_lock:
            self._predictor.set_embedding(embedding)
            transform, device = self._predictor.transform, self._predictor.device
            coords = labels = boxes = None
            if points_xy is not None:
                points = np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)  # K x 2
                values = np.asarray(point_labels if point_labels is not None else np.ones(len(points)),
                                    dtype=np.int64).reshape(-1)  # K
                if len(points) != len(values):
                    raise ValueError(f"got {len(points)} points but {len(values)} point labels")
                coords = transform.apply_coords_torch(torch.as_tensor(points, device=device),
                                                      (height, width))[None]  # 1 x K x 2
                labels = torch.as_tensor(values, device=device)[None]  # 1 x K
            if box_xyxy is not None:
                box = np.asarray(box_xyxy, dtype=np.float32).reshape(1, 4)
                boxes = transform.apply_boxes_torch(torch.as_tensor(box, device=device), (height, width))
            masks, scores, _ = self._predictor.predict_torch(coords, labels, boxes=boxes,
                                                             multimask_output=multimask)
            self.stats.sam_decoder_calls += 1
        order = torch.argsort(scores[0].float(), descending=True)  # C, best first
        return masks[0, order].cpu().numpy(), scores[0, order].float().cpu().numpy()

    def _require_sam(self, what: str) -> None:
        if self.sam is None:
            raise ValueError(
                f"{what} needs a SAM model, and this pipeline has sam: none (the detector's masks); "
                "build it with a SAM, e.g. sam: vit_b"
            )
