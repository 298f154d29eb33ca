"""Images behind URIs (``s3://``, ``gs://``, ``hdfs://``, ``file://``, ``local://``) through pyarrow
filesystems, the layer Ray Data reads with. pyarrow comes with ``pip install 'grounded-sam[ray]'``.

A URI source is a single object or a "folder" (a prefix), listed recursively; only image extensions
are collected from a folder and hidden entries are skipped, as for local folders. Names are relative
to the URI given (the folder, or the object's parent), so ``s3://bucket/photos`` and a local copy of
``photos/`` give the same COCO ``file_name``s. Globs are not expanded in URIs, and query parameters
(``?region=...``) are dropped from the per-image URIs; configure credentials and regions the usual
way for each store (environment variables, config files).
"""

from __future__ import annotations

import io
import posixpath
import re
from pathlib import PurePosixPath
from typing import Any, BinaryIO

__all__ = ["INSTALL_HINT", "is_uri", "list_uri", "open_uri"]

INSTALL_HINT = "pip install 'grounded-sam[ray]'"
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_uri(text: str) -> bool:
    """``scheme://...`` (a one-letter scheme is not one: ``C://`` is a Windows drive)."""
    match = _SCHEME.match(text)
    return match is not None and len(match.group(1)) > 1


def list_uri(uri: str, *, extensions: frozenset[str]) -> list[tuple[str, str]]:
    """(name, uri) of the images at ``uri``: the object itself, or the files with ``extensions``
    below it (recursive, hidden entries skipped), in sorted order.

    Raises:
        ValueError: pyarrow is missing, the store cannot be reached, or nothing is at ``uri``.
    """
    fs, root = _filesystem(uri)
    scheme = uri[: uri.index("://") + 3]
    try:
        info = fs.get_file_info(root)
        if info.type.name == "File":
            return [(posixpath.basename(root), scheme + root)]
        if info.type.name != "Directory":
            raise ValueError(f"source {uri!r} is neither an object nor a folder (prefix) in its store")
        from pyarrow.fs import FileSelector

        entries = fs.get_file_info(FileSelector(root, recursive=True))
    except OSError as exc:
        raise ValueError(f"could not list {uri!r}: {exc}") from None
    found = []
    for entry in entries:
        name = posixpath.relpath(entry.path, root)
        parts = PurePosixPath(name).parts
        if (entry.type.name == "File" and not any(part.startswith(".") for part in parts)
                and PurePosixPath(name).suffix.lower() in extensions):
            found.append((name, scheme + entry.path))
    return sorted(found)


def open_uri(uri: str) -> BinaryIO:
    """The bytes of the object at ``uri`` as a file object named after it (for error messages).

    Raises:
        OSError: the object cannot be read (missing, no permission, store unreachable).
    """
    try:
        fs, path = _filesystem(uri)
    except ValueError as exc:
        raise OSError(str(exc)) from None
    with fs.open_input_stream(path) as stream:
        data = stream.read()
    handle = io.BytesIO(data)
    handle.name = posixpath.basename(path)  # load_image names the image by it
    return handle


def _filesystem(uri: str) -> tuple[Any, str]:
    try:
        from pyarrow.fs import FileSystem
    except ImportError:
        raise ValueError(f"reading {uri!r} needs pyarrow; install it with {INSTALL_HINT}") from None
    try:
        return FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise ValueError(f"no filesystem for {uri!r}: {exc}") from None
