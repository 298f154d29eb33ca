"""A user's corrections to one result, kept apart from the prediction so they survive re-thresholding.

The pipeline's output for the current thresholds is ``predicted``; what the page shows, downloads and
returns is ``apply_edits(predicted, classes, edits)``. An :class:`Edits` value says which predicted
instances were deleted and which instances were changed or added by hand (:class:`Instance`, keyed
by :func:`predicted_keys` for a predicted one, ``"user:..."`` for one added by hand). A predicted
instance's key is its box and class, which stay the same when only thresholds change, so new
thresholds re-apply every edit: deletions stay deleted, and an instance the user edited or added is
kept even where the new thresholds would drop it. ``Edits`` values are immutable, so undo/redo
is a stack of them sharing their masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import supervision as sv

from grounded.masks import CompactMask, compact_masks, compact_nbytes

__all__ = ["Click", "Edits", "Instance", "apply_edits", "edits_nbytes", "instance_of", "predicted_keys"]


class Click(NamedTuple):
    """One refine click, in absolute pixels of the original image."""

    x: float
    y: float
    positive: bool


@dataclass(frozen=True)
class Instance:
    """One instance as the user left it. ``mask`` is a one-mask ``CompactMask`` in the image's frame;
    ``xyxy`` absolute pixels; ``confidence`` is the detector's score (1.0 for one added by hand)."""

    xyxy: tuple[float, float, float, float]
    class_id: int
    confidence: float
    mask: CompactMask
    mask_score: float
    clicks: tuple[Click, ...] = ()
    added: bool = False


@dataclass(frozen=True)
class Edits:
    """Deleted predicted keys and changed/added instances by key (treat ``overrides`` as read-only)."""

    deleted: frozenset[str] = frozenset()
    overrides: Mapping[str, Instance] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.deleted or self.overrides)

    def with_instance(self, key: str, instance: Instance) -> Edits:
        return Edits(self.deleted - {key}, {**self.overrides, key: instance})

    def without(self, key: str, *, delete: bool) -> Edits:
        """``key``'s override dropped; with ``delete`` the predicted instance is hidden as well."""
        overrides = {k: v for k, v in self.overrides.items() if k != key}
        deleted = self.deleted | {key} if delete and not key.startswith("user:") else self.deleted
        return Edits(frozenset(deleted), overrides)


def predicted_keys(predicted: sv.Detections) -> tuple[str, ...]:
    """One stable key per predicted row: its box (float32 bytes) and class; repeats get ``#n``."""
    keys: list[str] = []
    seen: dict[str, int] = {}
    class_ids = predicted.class_id if predicted.class_id is not None else np.zeros(len(predicted), int)
    for box, class_id in zip(np.asarray(predicted.xyxy, dtype=np.float32), class_ids, strict=True):
        key = f"det:{box.tobytes().hex()}:{int(class_id)}"
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return tuple(keys)


def instance_of(predicted: sv.Detections, row: int) -> Instance:
    """Predicted row ``row`` as an :class:`Instance` (its mask shared, not copied)."""
    box = tuple(float(v) for v in predicted.xyxy[row])
    return Instance(box, int(predicted.class_id[row]), float(predicted.confidence[row]),  # type: ignore[arg-type]
                    predicted.mask[[row]], float(predicted.data["mask_score"][row]))


def apply_edits(predicted: sv.Detections, classes: tuple[str, ...],
                edits: Edits) -> tuple[sv.Detections, tuple[str, ...]]:
    """The edited result and its row keys: predicted rows in order (deleted ones left out, changed ones
    replaced), then edited instances the prediction no longer holds, then ones added by hand.
    ``predicted`` itself is returned when there is no edit."""
    keys = predicted_keys(predicted)
    if not edits:
        return predicted, keys
    present = set(keys)
    rows: list[tuple[str, Instance | int]] = [(k, edits.overrides.get(k, i)) for i, k in enumerate(keys)
                                              if k not in edits.deleted]
    pinned = [(k, v) for k, v in edits.overrides.items() if k not in present and not k.startswith("user:")]
    added = [(k, v) for k, v in edits.overrides.items() if k.startswith("user:")]
    rows += pinned + added
    instances = [item if isinstance(item, Instance) else instance_of(predicted, item) for _, item in rows]
    height, width = predicted.mask.shape[1:]
    result = sv.Detections(
        xyxy=np.array([inst.xyxy for inst in instances], dtype=np.float32).reshape(-1, 4),  # N x 4
        confidence=np.array([inst.confidence for inst in instances], dtype=np.float32),
        class_id=np.array([inst.class_id for inst in instances], dtype=int),
        mask=(CompactMask.merge([inst.mask for inst in instances]) if instances
              else compact_masks([], (height, width))),
        data={"class_name": np.array([classes[inst.class_id] for inst in instances], dtype=object),
              "mask_score": np.array([inst.mask_score for inst in instances], dtype=np.float32)},
    )
    return result, tuple(k for k, _ in rows)


def edits_nbytes(*edit_sets: Edits) -> int:
    """Bytes held by the masks of these edit sets, each mask counted once (undo steps share them)."""
    seen: dict[int, int] = {}
    for edits in edit_sets:
        for inst in edits.overrides.values():
            seen.setdefault(id(inst.mask), compact_nbytes(inst.mask) + 256)
        seen.setdefault(id(edits), 64 * (len(edits.deleted) + len(edits.overrides)) + 64)
    return sum(seen.values())
