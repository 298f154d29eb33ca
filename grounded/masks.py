"""Compact masks: each full-resolution mask kept as the bit-packed crop around its pixels.

A 40 MP image with 100 detections is 4 GB as ``N x H x W`` bool masks; as packed crops it is at most
a sixteenth of that (1 bit per pixel of each mask's bounding box), usually far less. The pipeline's
cache, the web sessions and every export keep masks this way and expand one mask at a time, only
where a consumer needs the full frame (``PackedMasks.to_dense`` for the Python API's ``sv.Detections``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PackedMask", "PackedMasks"]


@dataclass(frozen=True)
class PackedMask:
    """One H x W bool mask as the bit-packed crop of its bounding box (all-False outside it)."""

    top: int
    left: int
    shape: tuple[int, int]  # crop height x width (0 x 0 for an empty mask)
    bits: np.ndarray  # np.packbits of the crop, row-major
    area: int  # pixels set

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> PackedMask:
        """``mask``: H x W bool (or 0/1)."""
        mask = np.asarray(mask, dtype=bool)
        rows = np.flatnonzero(mask.any(axis=1))
        if len(rows) == 0:
            return cls(0, 0, (0, 0), np.zeros(0, dtype=np.uint8), 0)
        cols = np.flatnonzero(mask.any(axis=0))
        crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # h x w bool
        return cls(int(rows[0]), int(cols[0]), crop.shape, np.packbits(crop, axis=None), int(crop.sum()))

    def crop(self) -> np.ndarray:
        """The h x w bool crop (``shape``), placed at (``top``, ``left``) in the full frame."""
        h, w = self.shape
        return np.unpackbits(self.bits, count=h * w).view(bool).reshape(h, w)

    def paste(self, out: np.ndarray) -> None:
        """OR the mask into ``out`` (H x W bool)."""
        h, w = self.shape
        if h:
            out[self.top : self.top + h, self.left : self.left + w] |= self.crop()

    def to_dense(self, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), dtype=bool)
        self.paste(out)
        return out

    def nbytes(self) -> int:
        return self.bits.nbytes + 64


@dataclass(frozen=True)
class PackedMasks:
    """N masks of one H x W image, in detection order."""

    height: int
    width: int
    items: tuple[PackedMask, ...] = ()

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> PackedMasks:
        """``masks``: N x H x W bool."""
        n, height, width = masks.shape
        return cls(int(height), int(width), tuple(PackedMask.from_mask(m) for m in masks))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> np.ndarray:
        """Mask ``index`` as H x W bool (a new array)."""
        return self.items[index].to_dense(self.height, self.width)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The masks one at a time, each H x W bool: at most one full frame held at once."""
        for item in self.items:
            yield item.to_dense(self.height, self.width)

    def areas(self) -> np.ndarray:
        """N int64 pixel counts."""
        return np.array([item.area for item in self.items], dtype=np.int64)

    def to_dense(self) -> np.ndarray:
        """N x H x W bool (N full frames: only for consumers that need them all at once)."""
        out = np.zeros((len(self.items), self.height, self.width), dtype=bool)
        for item, frame in zip(self.items, out, strict=True):
            item.paste(frame)
        return out

    def select(self, indexes: Sequence[int] | np.ndarray) -> PackedMasks:
        """The masks at ``indexes`` (e.g. the survivors of a filter), in that order."""
        return PackedMasks(self.height, self.width, tuple(self.items[int(i)] for i in indexes))

    def replace(self, index: int, mask: np.ndarray | PackedMask) -> PackedMasks:
        """A copy with mask ``index`` replaced."""
        item = mask if isinstance(mask, PackedMask) else PackedMask.from_mask(mask)
        items = list(self.items)
        items[index] = item
        return PackedMasks(self.height, self.width, tuple(items))

    def nbytes(self) -> int:
        return sum(item.nbytes() for item in self.items) + 64
