"""Writing files safely: the one atomic write, and the one way to put a class name in a file name."""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

__all__ = ["atomic_write", "atomic_write_bytes", "encode_png", "label_slug", "save_png"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], object], *, binary: bool = True) -> Path:
    """Write through a temporary file in the same folder, then ``os.replace``: readers never see a torn
    file, and an interrupted write leaves the old file (or none) behind. Creates missing folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def encode_png(rgb: np.ndarray) -> bytes:
    """An H x W x 3 (or H x W) uint8 array as the bytes of a lossless PNG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """An H x W x 3 (or H x W) uint8 array as a lossless PNG, atomically."""
    return atomic_write_bytes(path, encode_png(rgb))


def label_slug(label: str) -> str:
    """A class name as a file-name part (the CLI's mask files and the page's zip use the same one):
    runs of anything but word characters and '-' become '_', at most 48 characters, never empty."""
    return re.sub(r"[^\w-]+", "_", str(label)).strip("_")[:48] or "object"
