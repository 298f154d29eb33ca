"""A thread-safe LRU cache bounded by bytes, for image embeddings and raw detector outputs.

Entries are sized by the caller (``put(key, value, nbytes)``; :func:`nbytes_of` measures arrays and
tensors nested in dataclasses / tuples / dicts), so memory stays flat however many images arrive.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["ByteLRUCache", "nbytes_of"]


class ByteLRUCache:
    """Least-recently-used cache whose total size never exceeds ``max_bytes``.

    ``get`` marks an entry as most recently used; ``put`` evicts the least recently used entries
    until the new one fits. A value larger than ``max_bytes`` is not stored (and any older value
    under its key is dropped, so a stale value is never served). ``max_bytes=0`` disables caching.
    All methods take one lock, so the cache can be shared across request threads.
    """

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        self._max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def nbytes(self) -> int:
        """Total size of the stored values, as declared to ``put``."""
        return self._nbytes

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value under ``key`` (now most recently used), or ``default``; counts a hit or miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return default
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> bool:
        """Store ``value`` (``nbytes`` in size) as most recently used; False if it is too big to store."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        with self._lock:
            self._remove(key)
            if nbytes > self._max_bytes:
                return False
            while self._nbytes + nbytes > self._max_bytes:
                oldest = next(iter(self._entries))
                self._remove(oldest)
                self.evictions += 1
            self._entries[key] = (value, nbytes)
            self._nbytes += nbytes
            return True

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove and return the value under ``key`` (or ``default``)."""
        with self._lock:
            entry = self._entries.get(key)
            self._remove(key)
            return default if entry is None else entry[0]

    def clear(self) -> None:
        """Drop every entry (the hit / miss / eviction counters are kept)."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used (a snapshot)."""
        with self._lock:
            return list(self._entries)

    def __contains__(self, key: object) -> bool:
        """Membership test; does not count as a use (no LRU update, no hit/miss)."""
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return (f"ByteLRUCache(entries={len(self)}, nbytes={self._nbytes}, max_bytes={self._max_bytes}, "
                f"hits={self.hits}, misses={self.misses})")

    def _remove(self, key: Hashable) -> None:
        """Drop ``key`` if present; the caller holds the lock."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._nbytes -= entry[1]


def nbytes_of(obj: Any) -> int:
    """Bytes held by the arrays in ``obj``: numpy arrays and torch tensors (``.nbytes``), objects
    with an ``nbytes()`` method, and anything nested in dataclasses, dicts, lists, tuples and sets;
    ``bytes``/``str`` count their length. Each object is counted once; other objects count 0."""
    return _nbytes_of(obj, set())


def _nbytes_of(obj: Any, seen: set[int]) -> int:
    if obj is None or isinstance(obj, (bool, int, float, complex)) or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, (bytes, bytearray, memoryview, str)):
        return len(obj)
    size = getattr(obj, "nbytes", None)
    if isinstance(size, int):  # numpy.ndarray, torch.Tensor
        return size
    if callable(size):  # our dataclasses (ImageEmbedding, RawDetections) report their own size
        return int(size())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(_nbytes_of(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(_nbytes_of(k, seen) + _nbytes_of(v, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(_nbytes_of(item, seen) for item in obj)
    return 0
