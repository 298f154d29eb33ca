"""Per-tab state for the page, held compactly and bounded by bytes across all sessions.

A :class:`Session` keeps one image (H x W x 3 uint8) and its masks as supervision ``CompactMask``
(crop run-lengths), never ``N x H x W`` arrays. The :class:`SessionStore` holds every tab's session
under a random token (what ``gr.State`` carries) within one byte budget: the least recently used
sessions are dropped first, and a session idle for longer than ``ttl_s`` is released.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from grounded.config import PipelineConfig
from grounded.masks import CompactMask, compact_nbytes
from grounded.web.edits import Click, Edits, edits_nbytes

__all__ = ["Candidates", "Click", "Session", "SessionExpiredError", "SessionStore"]


@dataclass(frozen=True)
class Session:
    """Everything one browser tab needs to re-threshold, correct and export without the upload.

    ``predicted`` is the pipeline's output for ``options`` (zero-area instances dropped);
    ``detections`` is ``predicted`` with the user's ``edits`` applied (``grounded.web.edits``): what
    every view, the download and the JSON show; ``keys`` names each of its rows. ``undo``/``redo``
    hold earlier/later edit sets; ``candidates`` SAM's alternative masks for the last point-added
    or first-clicked instance; ``corner`` the first corner of a box being drawn. Masks are
    ``sv.CompactMask`` in the frame of ``image`` (H x W x 3 uint8 RGB).
    """

    image: np.ndarray
    image_name: str
    classes: tuple[str, ...]
    preset: str
    config: PipelineConfig
    options: Any  # service.SegmentOptions
    predicted: sv.Detections
    detections: sv.Detections
    models: Mapping[str, Any] = field(default_factory=dict)  # GroundedSAM.describe(): device, dtypes
    edits: Edits = field(default_factory=Edits)
    keys: tuple[str, ...] = ()
    undo: tuple[Edits, ...] = ()
    redo: tuple[Edits, ...] = ()
    candidates: Candidates | None = None
    corner: tuple[float, float] | None = None
    dropped_empty: int = 0  # zero-area instances the pipeline returned and the session left out

    @property
    def untrained(self) -> bool:
        return self.config.untrained

    @property
    def image_size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    @property
    def clicks(self) -> dict[int, tuple[Click, ...]]:
        """Refine clicks by row of ``detections`` (rows without clicks left out)."""
        overrides = self.edits.overrides
        return {row: overrides[key].clicks for row, key in enumerate(self.keys)
                if key in overrides and overrides[key].clicks}

    def nbytes(self) -> int:
        """Bytes this session holds: the image, the predicted and edited masks, undo steps, the rest."""
        total = self.image.nbytes + 4096 + 64 * len(self.detections)
        masks = [self.predicted.mask, self.detections.mask]
        if masks[0] is masks[1]:
            masks = masks[:1]
        for mask in masks:
            if isinstance(mask, CompactMask):
                total += compact_nbytes(mask)
            elif mask is not None:
                total += mask.nbytes
        total += edits_nbytes(self.edits, *self.undo, *self.redo)
        if self.candidates is not None:
            total += compact_nbytes(self.candidates.masks)
        return total


@dataclass(frozen=True)
class Candidates:
    """SAM's candidate masks (best first) for the instance ``key``, added or refined with one click."""

    key: str
    masks: CompactMask  # C masks
    scores: tuple[float, ...]
    chosen: int | None = 0  # None: offered beside SAM's single-mask output, none picked yet


class SessionExpiredError(ValueError):
    """The token names no session held now (idle too long, or dropped to stay within the budget)."""


class SessionStore:
    """Sessions by token, within ``max_bytes`` in all; idle ones (``ttl_s``) are released. Thread-safe.

    A session larger than the whole budget is refused with a message naming both sizes.
    """

    def __init__(self, max_bytes: int, *, ttl_s: float = 1800.0, clock: Callable[[], float] = time.monotonic):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._items: OrderedDict[str, tuple[Session, int, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def put(self, session: Session, token: str | None = None) -> str:
        """Store ``session`` (replacing ``token``'s, if given); returns its token."""
        size = session.nbytes()
        if size > self.max_bytes:
            raise ValueError(
                f"this result needs {size / 2**20:.0f} MiB of session memory; the server keeps at most "
                f"{self.max_bytes / 2**20:.0f} MiB for all sessions: use a smaller image or fewer detections"
            )
        with self._lock:
            self._expire()
            if token is not None:
                self._drop(token)
            token = token or secrets.token_urlsafe(16)
            self._items[token] = (session, size, self._clock())
            self._bytes += size
            while self._bytes > self.max_bytes:  # least recently used first; never the new one
                self._drop(next(iter(self._items)))
            return token

    def get(self, token: Any) -> Session:
        """The session for ``token``, or :class:`SessionExpiredError` with what to do."""
        with self._lock:
            self._expire()
            if not isinstance(token, str) or token not in self._items:
                raise SessionExpiredError(
                    "this result is no longer held by the server (it was idle too long, or memory was "
                    "needed for newer requests): press Run again"
                )
            session, size, _ = self._items.pop(token)
            self._items[token] = (session, size, self._clock())  # most recently used
            return session

    def sweep(self) -> None:
        """Release idle sessions now (``put``/``get`` also do it)."""
        with self._lock:
            self._expire()

    def _expire(self) -> None:
        deadline = self._clock() - self.ttl_s
        for token in [t for t, (_, _, used) in self._items.items() if used < deadline]:
            self._drop(token)

    def _drop(self, token: str) -> None:
        item = self._items.pop(token, None)
        if item is not None:
            self._bytes -= item[1]
