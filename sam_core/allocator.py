"""Keep freed CPU memory in the process for reuse instead of returning it to the OS (glibc only).

Inference allocates and frees the same large activations (tens of MB each) over and over. glibc
serves blocks above its mmap threshold with fresh ``mmap`` calls and unmaps them on free, so every
such tensor page-faults its memory in again: on a small VM that is 20 ms for a 32 MB tensor, more
than the matrix product that fills it. ``tune_cpu_allocator`` tells glibc to serve large blocks from
the heap and not to trim it, which is what tcmalloc/jemalloc (recommended by PyTorch's CPU tuning
guide) achieve without an ``LD_PRELOAD``. The cost: the process keeps its peak heap resident.

Process-wide and idempotent. ``SAM_CORE_TUNE_MALLOC=0`` in the environment turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading

__all__ = ["tune_cpu_allocator", "allocator_tuned"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap

_lock = threading.Lock()
_tuned: bool | None = None  # None: not tried yet


def tune_cpu_allocator() -> bool:
    """Apply the glibc settings once; True when they are in effect (False elsewhere: macOS, musl,
    Windows, or when ``SAM_CORE_TUNE_MALLOC=0``)."""
    global _tuned
    with _lock:
        if _tuned is None:
            _tuned = _apply()
        return _tuned


def allocator_tuned() -> bool:
    """Whether ``tune_cpu_allocator`` has put the settings in effect in this process."""
    return bool(_tuned)


def _apply() -> bool:
    if os.environ.get("SAM_CORE_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mmap'd blocks are still used where the heap cannot grow (glibc falls back to mmap).
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
