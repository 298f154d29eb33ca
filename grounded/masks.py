"""Compact masks: supervision's ``CompactMask`` (crop-RLE per mask) built one full frame at a time.

A 40 MP image with 100 detections is 4 GB as ``N x H x W`` bool masks; as ``sv.CompactMask`` it is the
run-length code of each mask's tight bounding box. The pipeline's cache, ``predict_compact``, the web
sessions and the exports keep masks this way; supervision's annotators draw them crop by crop, and a
full frame is expanded only where a consumer needs one (``mask[i]``, ``to_dense()``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from supervision.detection.compact_mask import CompactMask

__all__ = ["CompactMask", "compact_masks", "compact_nbytes", "replace_mask"]


def _tight_box(mask: np.ndarray) -> np.ndarray:
    """1 x 4 inclusive xyxy of the set pixels (supervision's convention); a 1-pixel box if none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return np.zeros((1, 4), dtype=np.float32)
    return np.array([[cols[0], rows[0], cols[-1], rows[-1]]], dtype=np.float32)


def compact_masks(masks: Iterable[np.ndarray], image_shape: tuple[int, int]) -> CompactMask:
    """H x W bool masks (any iterable, e.g. a generator of one frame at a time) -> one CompactMask,
    each mask encoded exactly within its tight bounding box."""
    height, width = (int(v) for v in image_shape)
    parts = [CompactMask.from_dense(np.asarray(m, dtype=bool)[None], _tight_box(m), (height, width))
             for m in masks]  # each 1 x H x W view -> a one-mask CompactMask
    if not parts:
        empty = np.zeros((0, 2), dtype=np.int32)
        return CompactMask([], empty, empty.copy(), (height, width))
    return CompactMask.merge(parts)


def replace_mask(masks: CompactMask, index: int, mask: np.ndarray) -> CompactMask:
    """A copy of ``masks`` with mask ``index`` replaced by ``mask`` (H x W bool)."""
    n = len(masks)
    if not 0 <= index < n:
        raise ValueError(f"mask index {index} is out of range for {n} masks")
    new = compact_masks([mask], masks.image_shape)
    parts = [p for p in (masks[list(range(index))], new, masks[list(range(index + 1, n))]) if len(p)]
    return CompactMask.merge(parts)


def compact_nbytes(masks: CompactMask) -> int:
    """Bytes held by ``masks`` (its run-length codes plus per-mask bookkeeping)."""
    rles = getattr(masks, "_rles", None)  # supervision's storage; no public size accessor in 0.31
    if rles is None:  # fall back to a bit per pixel of each crop, an upper bound for sparse codes
        return int(sum(int(h) * int(w) for h, w in masks.bbox_xyxy[:, 2:] - masks.bbox_xyxy[:, :2] + 1) // 8)
    return int(sum(r.nbytes for r in rles)) + 32 * len(masks)
