"""SOURCES expansion (files, folders, globs, .txt lists) and deterministic sharding."""

from __future__ import annotations

from pathlib import Path

import pytest

from grounded.io.sources import ImageSource, SourceError, expand_sources, parse_shard, select_shard, shard_of


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in ("b.jpg", "a.PNG", "sub/c.jpeg", "sub/deeper/d.webp", "other/c.jpeg", "notes.txt",
                 ".hidden.png", ".cache/e.png", "out/overlays/x.png"):
        _touch(root / name)
    return root


def test_folder_is_recursive_sorted_and_image_only(tree: Path) -> None:
    images = expand_sources([tree])
    assert [image.name for image in images] == [
        "a.PNG", "b.jpg", "other/c.jpeg", "out/overlays/x.png", "sub/c.jpeg", "sub/deeper/d.webp"]
    assert all(image.path.is_absolute() and image.path.is_file() for image in images)


def test_output_folder_is_excluded(tree: Path) -> None:
    names = [image.name for image in expand_sources([tree], exclude=[tree / "out"])]
    assert "out/overlays/x.png" not in names and len(names) == 5


def test_explicit_file_is_taken_whatever_its_extension(tree: Path) -> None:
    (image,) = expand_sources([tree / "sub" / "deeper" / "d.webp"])
    assert image.name == "d.webp"
    weird = _touch(tree / "scan.raw")
    assert [i.name for i in expand_sources([weird])] == ["scan.raw"]


def test_glob_names_are_relative_to_the_fixed_prefix(tree: Path) -> None:
    images = expand_sources([str(tree / "sub" / "**" / "*.*")])
    assert [image.name for image in images] == ["c.jpeg", "deeper/d.webp"]
    assert [i.name for i in expand_sources([str(tree / "*.jpg")])] == ["b.jpg"]


def test_duplicates_are_removed_keeping_the_first_name(tree: Path) -> None:
    images = expand_sources([tree / "sub", tree / "sub" / "c.jpeg", str(tree / "sub" / "*.jpeg")])
    assert [image.name for image in images] == ["c.jpeg", "deeper/d.webp"]


def test_txt_list_relative_to_the_list_with_comments(tree: Path, tmp_path: Path) -> None:
    listing = tree / "todo.txt"
    listing.write_text("# my images\n\nb.jpg\n  sub  \nsub/missing.jpg\n../elsewhere.png\n"
                       f"{tree / 'other' / 'c.jpeg'}\n", encoding="utf-8")
    _touch(tree.parent / "elsewhere.png")
    images = expand_sources([listing])
    names = [image.name for image in images]
    assert names == ["b.jpg", "elsewhere.png", "other/c.jpeg", "sub/c.jpeg", "sub/deeper/d.webp",
                     "sub/missing.jpg"]
    missing = next(image for image in images if image.name.endswith("missing.jpg"))
    assert not missing.path.exists()  # kept: reported later as a skipped image


def test_missing_source_and_empty_glob_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not an existing file or folder"):
        expand_sources([tmp_path / "nope.jpg"])
    with pytest.raises(SourceError, match="matches no files"):
        expand_sources([str(tmp_path / "*.jpg")])
    with pytest.raises(SourceError, match="no SOURCES"):
        expand_sources([])


def test_output_stem_never_escapes_the_output_folder() -> None:
    assert ImageSource(name="../../x/y.jpg", path=Path("/x/y.jpg")).output_stem == "x/y"
    assert ImageSource(name="sub/cat.jpg", path=Path("/a/sub/cat.jpg")).output_stem == "sub/cat"


def test_order_does_not_depend_on_argument_order(tree: Path) -> None:
    one = expand_sources([tree / "sub", tree / "b.jpg"])
    two = expand_sources([tree / "b.jpg", tree / "sub"])
    assert one == two


@pytest.mark.parametrize("text, expected", [("0/1", (0, 1)), ("2/4", (2, 4)), ("9/10", (9, 10))])
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text, message", [("4/4", "0-based"), ("-1/3", "0-based"), ("1/0", ">= 1"),
                                           ("1", "I/N"), ("a/b", "I/N")])
def test_parse_shard_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard(text)


def test_shards_partition_every_image_exactly_once() -> None:
    images = [ImageSource(name=f"dir{i % 7}/img_{i:04d}.jpg", path=Path(f"/data/{i}.jpg"))
              for i in range(500)]
    for count in (1, 2, 3, 8):
        shards = [select_shard(images, index, count) for index in range(count)]
        flat = [image for shard in shards for image in shard]
        assert sorted(flat) == sorted(images) and len(flat) == len(set(flat))
        if count > 1:  # a hash, not "all in one shard"
            assert min(len(s) for s in shards) > 500 / count / 2


# The documented rule (docs/cli.md, grounded/io/sources.py): shard = first 8 bytes of SHA-1(UTF-8 name),
# big-endian, mod N. Values worked out once outside the code under test, from `sha1sum`'s digest:
# name -> (first 16 hex digits, shard for N = 2, 3, 7).
PINNED_SHARDS = {
    "dir0/img_0000.jpg": ("2f000e36eb9ce678", (0, 1, 3)),
    "train/cat.png": ("c7bdb442b19296f8", (0, 2, 0)),
    "x1": ("16d4afa270ff9052", (0, 0, 2)),
    "x2": ("d43134cb1ce397f6", (0, 1, 2)),
    "a.jpg": ("56ceeb905c2d3070", (0, 2, 3)),
    "photos/2024/IMG_0001.JPG": ("900be8c80b630ee5", (1, 1, 0)),
    "é/ü.png": ("4e967914ab7b301d", (1, 2, 1)),
}


@pytest.mark.parametrize("name", PINNED_SHARDS)
def test_shard_of_a_known_name_is_pinned(name: str) -> None:
    """Stable across processes, machines and versions (not Python's salted ``hash()``): resuming or
    re-running a sharded job must give every image the shard it had before."""
    digest, expected = PINNED_SHARDS[name]
    assert tuple(int(digest, 16) % count for count in (2, 3, 7)) == expected  # the table agrees with itself
    assert tuple(shard_of(name, count) for count in (2, 3, 7)) == expected
    assert shard_of(name, 1) == 0
    image = ImageSource(name=name, path=Path("/data/anywhere.jpg"))  # the mount point does not matter
    for count, index in zip((2, 3, 7), expected, strict=True):
        assert select_shard([image], index, count) == [image]
