"""Command-line SOURCES -> a sorted, de-duplicated list of images, and deterministic sharding.

A source is one of:

* an image file: taken whatever its extension (a bad file is reported and skipped later);
* a folder: every file with an image extension below it, recursively (hidden entries skipped);
* a glob (``"photos/**/*.jpg"``, ``**`` recursive): matching files with an image extension;
* a URI (``s3://bucket/photos``, ``gs://...``, ``file:///data``): an object, or every image below a
  prefix, through a pyarrow filesystem (``grounded/io/uris.py``; needs the ``ray`` extra);
* a ``.txt`` list: one path (file, folder, glob or URI) per line, relative to the list file's folder;
  blank lines and lines starting with ``#`` are ignored; what a line finds is named relative to the
  list's folder (when outside it, like a source given on the command line). A listed path that
  does not exist is kept and reported as a skipped image, so one stale line does not stop a large
  job; a listed glob that matches nothing adds nothing.

Each image gets a ``name``: its path relative to the root of the source that found it (the folder,
the glob's fixed prefix, the parent of an explicit file, or the list file's folder), in POSIX form.
The name is the COCO ``file_name`` and the key sharding hashes, so it does not depend on where the
data set is mounted.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grounded.io.uris import is_uri, list_uri

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "SourceError",
    "expand_sources",
    "parse_shard",
    "select_shard",
    "shard_of",
    "shown",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
     ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".avif", ".heic", ".heif"}
)
"""Extensions (lower case) picked up from folders and globs; explicit files are tried regardless."""

_GLOB_CHARS = frozenset("*?[")
_LIST_SUFFIX = ".txt"


class SourceError(ValueError):
    """A SOURCES argument names nothing usable; the message says which and why."""


@dataclass(frozen=True, order=True)
class ImageSource:
    """One image of a batch run.

    Attributes:
        name: POSIX path relative to its source root (COCO ``file_name``; the sharding key).
        path: absolute, resolved path of the file (what is read); for a URI, the object's path in
            its store (for its extension).
        uri: the object's URI when it is not a local file (what is read), else ``None``.
    """

    name: str
    path: Path
    uri: str | None = None

    @property
    def location(self) -> str:
        """Where the image is read from: its URI or absolute path (the resume key, ``source``)."""
        return self.uri if self.uri is not None else str(self.path)

    @property
    def output_stem(self) -> str:
        """``name`` without its extension and without ``..``/absolute parts: safe below an output dir."""
        pure = PurePosixPath(self.name)
        parts = [part for part in pure.with_suffix("").parts if part not in ("", ".", "..", "/")]
        return "/".join(parts) or "image"


def expand_sources(
    sources: Sequence[str | os.PathLike[str]], *, exclude: Iterable[str | os.PathLike[str]] = ()
) -> list[ImageSource]:
    """Expand SOURCES (files, folders, globs, ``.txt`` lists) into images sorted by (name, path).

    Args:
        sources: as typed on the command line; relative paths are relative to the working directory.
        exclude: folders whose contents are never collected from folders or globs (the output folder,
            so a second run over ``photos/`` does not pick up ``photos/out/overlays``).

    Raises:
        SourceError: a source does not exist and matches no file, or an empty list of sources.
    """
    if not sources:
        raise SourceError("no SOURCES given; pass image files, folders, globs or a .txt list")
    excluded = tuple(Path(p).resolve() for p in exclude)
    found: dict[str, ImageSource] = {}
    for source in sources:
        for image in _expand_one(os.fspath(source), base=Path.cwd(), excluded=excluded, list_root=None):
            found.setdefault(image.location, image)  # first occurrence keeps its name
    return sorted(found.values(), key=lambda image: (image.name, image.location))


def _expand_one(text: str, *, base: Path, excluded: tuple[Path, ...],
                list_root: Path | None) -> list[ImageSource]:
    """One source; ``list_root`` is the list file's folder when the source is a line of a list."""
    if is_uri(text):
        return _expand_uri(text)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.is_dir():
        return _walk_folder(path, root=_root(path, list_root), excluded=excluded)
    if path.is_file():
        if path.suffix.lower() == _LIST_SUFFIX and list_root is None:
            return _read_list(path, excluded=excluded)
        return [ImageSource(name=_name(path, _root(path.parent, list_root)), path=path.resolve())]
    if _GLOB_CHARS & set(text):
        return _expand_glob(path, excluded=excluded, list_root=list_root)
    if list_root is not None:  # keep it: reported as "does not exist" in the skip report
        return [ImageSource(name=_name(path, _root(path.parent, list_root)), path=path.resolve())]
    raise SourceError(f"source {text!r} is not an existing file or folder and matches no files as a glob")


def _expand_uri(uri: str) -> list[ImageSource]:
    try:
        found = list_uri(uri, extensions=IMAGE_EXTENSIONS)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    return [ImageSource(name=name, path=Path(location.split("://", 1)[1]), uri=location)
            for name, location in found]


def _walk_folder(folder: Path, *, root: Path, excluded: tuple[Path, ...]) -> list[ImageSource]:
    images = []
    for dirpath, dirnames, filenames in os.walk(folder):
        current = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (current / d).resolve() not in excluded
        )
        for filename in sorted(filenames):
            file = current / filename
            if filename.startswith(".") or not _is_image_name(filename):
                continue
            if file.is_file():
                images.append(ImageSource(name=_name(file, root), path=file.resolve()))
            elif file.is_symlink():  # dangling or looping: kept, so the skip report names it
                images.append(ImageSource(name=_name(file, root), path=Path(os.path.abspath(file))))
    return images


def _expand_glob(pattern: Path, *, excluded: tuple[Path, ...], list_root: Path | None) -> list[ImageSource]:
    root = _root(_glob_root(pattern), list_root)
    matches = sorted(glob.glob(str(pattern), recursive=True))
    if not matches and list_root is None:
        raise SourceError(f"glob {str(pattern)!r} matches no files")
    images = []
    for match in map(Path, matches):
        if _is_excluded(match, excluded):
            continue
        if match.is_dir():
            images.extend(_walk_folder(match, root=root, excluded=excluded))
        elif match.is_file() and _is_image_name(match.name):
            images.append(ImageSource(name=_name(match, root), path=match.resolve()))
    return images


def shown(name: str) -> str:
    """A file name for a terminal line: as is when printable, else Python-escaped (``repr``), so a
    name holding a newline or a control character cannot forge report lines."""
    return name if name.isprintable() else repr(name)


def _read_list(list_file: Path, *, excluded: tuple[Path, ...]) -> list[ImageSource]:
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise SourceError(
            f"list file {str(list_file)!r} is not UTF-8 text (one image path per line)"
        ) from None
    images = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            images.extend(_expand_one(entry, base=list_file.parent, excluded=excluded,
                                      list_root=list_file.parent))
    return images


def _glob_root(pattern: Path) -> Path:
    """The longest leading part of a glob without wildcards: the root its names are relative to."""
    fixed = []
    for part in pattern.parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path.cwd()


def _root(own_root: Path, list_root: Path | None) -> Path:
    """Names are relative to the list's folder for everything inside it, else to the source's root."""
    if list_root is not None and not os.path.relpath(own_root, list_root).startswith(".."):
        return list_root
    return own_root


def _name(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _is_image_name(filename: str) -> bool:
    return os.path.splitext(filename)[1].lower() in IMAGE_EXTENSIONS


def _is_excluded(path: Path, excluded: tuple[Path, ...]) -> bool:
    resolved = path.resolve()
    return any(resolved == folder or folder in resolved.parents for folder in excluded)


# ------------------------------------------------------------------------------------------ sharding
def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N): shard I of N, **0-based** (I in 0..N-1), as a SLURM/K8s array index.

    Raises:
        ValueError: not two integers, N < 1, or I outside 0..N-1.
    """
    index_text, sep, count_text = text.partition("/")
    try:
        if not sep:
            raise ValueError
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1:
        raise ValueError(f"--shard {text}: the shard count N must be >= 1")
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: the shard index is 0-based, so I must be in 0..{count - 1}")
    return index, count


def shard_of(name: str, count: int) -> int:
    """Shard (0..count-1) of an image name: a stable hash, so adding images never moves others."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(images: Sequence[ImageSource], index: int, count: int) -> list[ImageSource]:
    """The images of shard ``index`` of ``count``; the shards 0..count-1 partition ``images``."""
    return [image for image in images if shard_of(image.name, count) == index]
