"""load_image: every Pillow mode, EXIF orientation, bombs, broken files and numpy conversions."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from spies import pillow_decodes

from grounded.io.images import DEFAULT_MAX_PIXELS, ImageError, image_content_hash, load_image

RNG = np.random.default_rng(0)


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def _png(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A valid 1-bit grayscale PNG of all-black pixels, written chunk by chunk (no big allocation)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    data += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit gray, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _check(out: np.ndarray, height: int, width: int) -> None:
    assert out.shape == (height, width, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


# ------------------------------------------------------------------------------ modes


def test_rgb_png_is_lossless(tmp_path):
    pixels = RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    out = load_image(_save(Image.fromarray(pixels), tmp_path / "a.png"))
    _check(out, 13, 17)
    np.testing.assert_array_equal(out, pixels)
    assert out.flags.writeable


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # transparent -> white
    rgba[0, 1] = (10, 20, 30, 255)  # opaque -> itself
    rgba[0, 2] = (0, 0, 0, 128)  # half black over white -> 255 * 127 / 255 = 127
    out = load_image(_save(Image.fromarray(rgba), tmp_path / "a.png"))
    _check(out, 4, 5)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]
    assert out[0, 2].tolist() == [127, 127, 127]


def test_la_is_composited_on_white(tmp_path):
    img = Image.new("LA", (3, 2), (0, 0))
    img.putpixel((1, 0), (40, 255))
    out = load_image(_save(img, tmp_path / "a.png"))
    _check(out, 2, 3)
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [40, 40, 40]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 3), 0)
    img.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    img.putpixel((2, 1), 1)
    path = _save(img, tmp_path / "p.png", transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    out = load_image(path)
    _check(out, 3, 4)
    assert out[1, 2].tolist() == [200, 10, 20]
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent index composited on white


def test_grayscale_and_1bit(tmp_path):
    gray = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
    out = load_image(_save(Image.fromarray(gray), tmp_path / "l.png"))
    _check(out, 6, 7)
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=2))
    bits = RNG.random((5, 9)) > 0.5
    out = load_image(_save(Image.fromarray(bits).convert("1"), tmp_path / "b.png"))
    assert Image.open(tmp_path / "b.png").mode == "1"
    _check(out, 5, 9)
    np.testing.assert_array_equal(out[:, :, 0], np.where(bits, 255, 0))


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 4095, 8 * 9).reshape(8, 9).astype(np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "d.png")
    assert Image.open(path).mode.startswith("I;16")
    out = load_image(path)
    _check(out, 8, 9)
    expected = np.rint(values / 257.0).astype(np.uint8)  # 65535 -> 255
    np.testing.assert_array_equal(out[:, :, 1], expected)
    assert out.max() == 16 and out.min() == 0  # not clipped to white


def test_int32_and_float_tiff(tmp_path):
    ints = np.arange(-600, 600, 20, dtype=np.int32).reshape(6, 10)  # no standard range -> stretch
    out = load_image(_save(Image.fromarray(ints), tmp_path / "i.tif"))
    assert Image.open(tmp_path / "i.tif").mode == "I"
    _check(out, 6, 10)
    np.testing.assert_array_equal(out[:, :, 0], np.rint((ints + 600) * 255 / 1180).astype(np.uint8))
    floats = RNG.random((5, 4)).astype(np.float32)  # [0, 1] -> * 255
    out = load_image(_save(Image.fromarray(floats), tmp_path / "f.tif"))
    assert Image.open(tmp_path / "f.tif").mode == "F"
    np.testing.assert_array_equal(out[:, :, 2], np.rint(floats * 255).astype(np.uint8))


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path)
    _check(out, 8, 16)
    assert np.abs(out.astype(int) - [255, 0, 0]).max() <= 8  # pure red


def test_one_pixel(tmp_path):
    out = load_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "one.png"))
    _check(out, 1, 1)
    assert out[0, 0].tolist() == [1, 2, 3]


def test_exif_orientation_6_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # H=20, W=40 as stored
    stored[:8, :8] = (255, 0, 0)  # red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = _save(Image.fromarray(stored), tmp_path / "o.jpg", exif=exif, quality=95)
    out = load_image(path)
    _check(out, 40, 20)  # displayed portrait
    # rotating 90° clockwise moves the stored top-left corner to the displayed top-right corner
    assert out[:6, -6:, 0].min() > 200 and out[:6, -6:, 1:].max() < 60
    assert out[:6, :6].max() < 60 and out[-6:, -6:].max() < 60
    np.testing.assert_array_equal(load_image(path.read_bytes()), out)
    np.testing.assert_array_equal(load_image(Image.open(path)), out)


# ------------------------------------------------------------------------------ sources


def test_bytes_file_object_and_pil_sources(tmp_path):
    pixels = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "s.png")
    for source in (str(path), path, path.read_bytes(), bytearray(path.read_bytes()),
                   io.BytesIO(path.read_bytes()), Image.open(path), Image.fromarray(pixels)):
        np.testing.assert_array_equal(load_image(source), pixels)
    with pytest.raises(ImageError, match="unsupported image source of type int"):
        load_image(42)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(pixels, max_pixels=0)


# ------------------------------------------------------------------------------ limits


def test_decompression_bomb_refused_from_header_then_next_load_works(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(20000, 20000))
    assert bomb.stat().st_size < 2_000_000
    decodes = pillow_decodes(monkeypatch)
    with pytest.raises(ImageError, match=r"20000×20000 = 400\.0 MP; the limit is 40\.0 MP"):
        load_image(bomb)
    assert decodes == []  # refused from the header: not one pixel decoded
    assert DEFAULT_MAX_PIXELS == 40_000_000
    _check(load_image(_save(Image.new("RGB", (8, 8)), tmp_path / "ok.png")), 8, 8)
    assert decodes  # the spy sees a real decode


def test_limit_below_pillows_own_and_custom_limit(tmp_path, monkeypatch):
    # 7000 x 7000 = 49 MP passes Pillow's default check (89 MP) but not ours; IDAT holds only 1 row
    decodes = pillow_decodes(monkeypatch)
    with pytest.raises(ImageError, match=r"7000×7000 = 49\.0 MP"):
        load_image(_png(7000, 7000, rows=1))
    assert decodes == []  # refused from the header
    small = _png(100, 100)
    with pytest.raises(ImageError, match=r"max_pixels=5000"):
        load_image(small, max_pixels=5000)
    _check(load_image(small, max_pixels=10_000), 100, 100)
    with pytest.raises(ImageError, match=r"100×100"):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=5000)
    with pytest.raises(ImageError, match=r"100×50"):
        load_image(Image.new("RGB", (100, 50)), max_pixels=4999)


def test_pillow_limit_reported_when_ours_is_raised():
    with pytest.raises(ImageError, match=r"Pillow's own limit.*MAX_IMAGE_PIXELS"):
        load_image(_png(20000, 20000, rows=1), max_pixels=10**9)


# ------------------------------------------------------------------------------ broken files


def test_truncated_files(tmp_path, monkeypatch):
    noise = Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    decodes = pillow_decodes(monkeypatch)
    for suffix, format_ in (("png", "PNG"), ("jpg", "JPEG")):
        full = io.BytesIO()
        noise.save(full, format=format_)
        path = tmp_path / f"cut.{suffix}"
        path.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
        decodes.clear()
        with pytest.raises(ImageError, match=rf"could not decode image 'cut\.{suffix}': .*truncated"):
            load_image(path)
        # one decode attempt that stops at the missing data: no retry, no padded "recovery" of the rest
        assert [call for call in decodes if call.startswith("load ")] == [f"load {format_} (64, 64)"]


def test_empty_text_svg_missing(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"'empty\.png'.*empty \(0 bytes\)"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    (tmp_path / "notes.png").write_text("hello, this is not a picture\n")
    with pytest.raises(ImageError, match=r"'notes\.png'.*text file"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageError, match="not a recognised image format"):
        load_image(bytes(range(256)) * 4)
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    (tmp_path / "logo.svg").write_bytes(svg)
    (tmp_path / "logo.svgz").write_bytes(zlib.compress(svg))  # gzip-like binary: known by its name
    for source in (tmp_path / "logo.svg", tmp_path / "logo.svgz", svg):
        with pytest.raises(ImageError, match=r"not a raster image \(SVG is not supported; convert it to PNG"):
            load_image(source)
    _save(Image.new("RGB", (3, 2)), tmp_path / "misnamed.svg", format="PNG")
    _check(load_image(tmp_path / "misnamed.svg"), 2, 3)  # content decides, not the name
    with pytest.raises(ImageError, match=r"'nope\.png' does not exist") as info:
        load_image(tmp_path / "nope.png")
    assert str(tmp_path) not in str(info.value)  # no server paths in messages
    assert issubclass(ImageError, ValueError)


# ------------------------------------------------------------------------------ numpy


def test_numpy_uint8_rgb_passes_through_without_copy():
    pixels = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert load_image(pixels) is pixels
    view = pixels[:, ::2]  # not contiguous -> contiguous copy with the same values
    out = load_image(view)
    _check(out, 7, 5)
    np.testing.assert_array_equal(out, view)


def test_numpy_conversions():
    gray = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    stacked = np.stack([gray] * 3, axis=2)
    np.testing.assert_array_equal(load_image(gray), stacked)
    np.testing.assert_array_equal(load_image(gray[:, :, None]), stacked)
    np.testing.assert_array_equal(load_image(gray.astype(np.int64)), stacked)  # ints in 0..255: as is
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    opaque = np.concatenate([rgb, np.full((4, 6, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(opaque), rgb)
    transparent = np.concatenate([rgb, np.zeros((4, 6, 1), np.uint8)], axis=2)
    assert (load_image(transparent) == 255).all()
    unit = RNG.random((4, 6, 3))
    np.testing.assert_array_equal(load_image(unit), np.rint(unit * 255).astype(np.uint8))
    bytes_range = unit.astype(np.float32) * 200  # within [0, 255]: rounded
    np.testing.assert_array_equal(load_image(bytes_range), np.rint(bytes_range))
    signed = unit * 2 - 1  # [-1, 1]: stretched min..max
    expected = np.rint((signed - signed.min()) * 255 / (signed.max() - signed.min())).astype(np.uint8)
    np.testing.assert_array_equal(load_image(signed), expected)
    deep = (unit * 65535).astype(np.uint16)
    np.testing.assert_array_equal(load_image(deep), np.rint(deep / 257.0).astype(np.uint8))
    mask = RNG.random((4, 6)) > 0.5
    np.testing.assert_array_equal(load_image(mask)[:, :, 0], np.where(mask, 255, 0))
    chw = RNG.integers(0, 256, (3, 8, 10), dtype=np.uint8)  # 3 x H x W with H, W > 4
    np.testing.assert_array_equal(load_image(chw), chw.transpose(1, 2, 0))


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((2, 8, 8, 3), np.uint8), r"\(2, 8, 8, 3\).*batch"),
        (np.zeros((0, 5, 3), np.uint8), r"empty array of shape \(0, 5, 3\)"),
        (np.zeros((8, 8, 2), np.uint8), r"shape \(8, 8, 2\)"),
        (np.zeros((3, 3, 5), np.uint8), r"shape \(3, 3, 5\)"),
        (np.zeros(5, np.uint8), r"shape \(5,\)"),
        (np.empty((4, 4, 3), dtype=object), "dtype object"),
        (np.full((4, 4), "a"), "dtype <U1"),
        (np.full((4, 4, 3), np.nan), "NaN"),
    ],
)
def test_numpy_refusals(array, match):
    with pytest.raises(ImageError, match=match) as info:
        load_image(array)
    assert "accepted" in str(info.value) or "NaN" in str(info.value)


def test_image_content_hash():
    a = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    assert image_content_hash(a) == image_content_hash(a.copy())
    assert image_content_hash(a[:, ::2]) == image_content_hash(np.ascontiguousarray(a[:, ::2]))
    b = a.copy()
    b[5, 7, 2] ^= 1
    assert image_content_hash(a) != image_content_hash(b)
    assert image_content_hash(a) != image_content_hash(a.reshape(8, 6, 3))
    assert image_content_hash(a) != image_content_hash(a.view(np.int8))
    assert len(image_content_hash(a)) == 64


def test_only_allow_listed_formats_are_decoded_and_an_ico_bomb_costs_no_decode(tmp_path, monkeypatch):
    import io as _io

    from spies import pillow_decodes

    # An ICO whose embedded PNG is 13000 x 13000: Pillow would decode the PNG inside Image.open.
    big = Image.new("L", (13000, 13000))
    png = _io.BytesIO()
    big.save(png, format="PNG")
    payload = png.getvalue()
    header = b"\x00\x00\x01\x00" + (1).to_bytes(2, "little")  # ICONDIR: reserved, type 1 (icon), 1 image
    entry = bytes([0, 0, 0, 0]) + (1).to_bytes(2, "little") + (32).to_bytes(2, "little")
    entry += len(payload).to_bytes(4, "little") + (6 + 16).to_bytes(4, "little")
    ico = tmp_path / "bomb.ico"
    ico.write_bytes(header + entry + payload)
    decodes = pillow_decodes(monkeypatch)
    with pytest.raises(ImageError, match="an ICO file .*convert it to PNG"):
        load_image(ico)
    assert decodes == []
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM"):  # the allow-list still decodes
        data = _io.BytesIO()
        Image.new("RGB", (5, 4), (10, 20, 30)).save(data, format=fmt)
        assert load_image(data.getvalue()).shape == (4, 5, 3), fmt
