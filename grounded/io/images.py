"""Load any user image into one canonical form: an H x W x 3 ``uint8`` RGB array.

Every entry point (Python API, CLI, HTTP API, UI) goes through :func:`load_image`, so they all see
the same pixels, in the same orientation, under the same size limit.

Rules (the same for files, bytes, PIL images and numpy arrays):

* Size: images with more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`, 40 MP)
  are refused from the file *header*, before any pixel is decoded, so a decompression bomb
  (a 20000 x 20000 PNG of a few kB) costs microseconds, not gigabytes.
* Orientation: the EXIF orientation tag is applied, so the array (and therefore every mask and
  box) is aligned with the image *as displayed* by a viewer or browser.
* Transparency (RGBA, LA, PA, P or L/RGB with a transparent colour): composited over **white**,
  which is how transparent PNGs look on a web page.
* High bit depth and floats are converted by one value-range rule, see :func:`_to_uint8`:
  ``uint16`` / 16-bit PNG ("I;16") -> ``round(v * 255 / 65535)`` (scaled, never clipped to white);
  other integers: 0..255 as is, 0..65535 scaled like uint16, anything else stretched min..max;
  floats: [0, 1] -> ``round(v * 255)``, [0, 255] -> ``round(v)``, anything else stretched
  min..max; NaN/inf refused; ``bool`` -> 0 / 255.
* Numpy arrays are taken as RGB (not BGR). Accepted: H x W, H x W x {1,3,4}, and channel-first
  {1,3,4} x H x W when H, W > 4. An H x W x 3 ``uint8`` C-contiguous array is returned as is
  (no copy).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ALLOWED_FORMATS", "DEFAULT_MAX_PIXELS", "ImageError", "image_content_hash", "load_image"]

DEFAULT_MAX_PIXELS = 40_000_000
"""Default pixel limit (W * H): 40 MP covers phone and DSLR photos (a 45 MP camera needs
``max_pixels=50_000_000``) while bounding decoded memory to ~160 MB per image."""

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray

_SNIFF_BYTES = 1024
# The only formats decoded. Pillow reads each one's size from its header in Image.open, before any
# pixel; formats that decode inside Image.open (ICO/CUR embed whole PNGs) or that need extra codecs
# are not on the list.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")  # JPEG includes MPO
_MAGIC_NAMES = {b"\x00\x00\x01\x00": "ICO", b"\x00\x00\x02\x00": "CUR"}
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error, IndexError, TypeError)


class ImageError(ValueError):
    """The input is not a usable image; the message says why and what is accepted."""


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``source`` into an H x W x 3 ``uint8`` RGB array, EXIF-transposed.

    Args:
        source: a file path, the encoded bytes of a file, a binary file object, a ``PIL.Image``,
            or a numpy array (see the module docstring for accepted shapes and dtypes).
        max_pixels: refuse images with more than this many pixels (W * H), checked before decoding.

    Raises:
        ImageError: (a ``ValueError``) for a missing, empty, truncated, non-raster or oversized
            image, or an array whose shape/dtype cannot be read as an image.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source, name="<PIL image>", max_pixels=max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), name="<bytes>", max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(source, max_pixels=max_pixels)
    if hasattr(source, "read"):
        name = os.path.basename(str(getattr(source, "name", ""))) or "<file>"
        return _from_bytes(source.read(), name=name, max_pixels=max_pixels)
    raise ImageError(
        f"unsupported image source of type {type(source).__name__}; pass a file path, bytes, a binary "
        "file object, a PIL.Image or a numpy array (torch tensors: .cpu().numpy())"
    )


def image_content_hash(image: np.ndarray) -> str:
    """Hex sha256 of an array's shape, dtype and bytes: equal iff the pixels are equal (cache keys)."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256()
    digest.update(repr((array.shape, array.dtype.str)).encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Encoded files
# ---------------------------------------------------------------------------------------------


def _from_path(path: str | os.PathLike, *, max_pixels: int) -> np.ndarray:
    # Only the base name goes into messages: full server paths must not leak to HTTP/UI clients.
    name = os.path.basename(os.fspath(path)) or os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(f"image file {name!r} does not exist or is not a regular file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"could not decode image {name!r}: the file is empty (0 bytes)")
    with open(path, "rb") as handle:
        return _from_stream(handle, name=name, max_pixels=max_pixels)


def _from_bytes(data: bytes, *, name: str, max_pixels: int) -> np.ndarray:
    if len(data) == 0:
        raise ImageError(f"could not decode image {name!r}: the data is empty (0 bytes)")
    return _from_stream(io.BytesIO(data), name=name, max_pixels=max_pixels)


def _from_stream(stream: BinaryIO, *, name: str, max_pixels: int) -> np.ndarray:
    head = stream.read(_SNIFF_BYTES)
    stream.seek(0)
    svg_error = ImageError(
        f"could not decode image {name!r}: it is not a raster image (SVG is not supported; convert it to PNG)"
    )
    if _looks_like_svg(head):
        raise svg_error
    try:
        img = Image.open(stream, formats=ALLOWED_FORMATS)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise _pil_bomb_error(stream, name, max_pixels, exc) from None
    except UnidentifiedImageError:
        if name.lower().endswith((".svg", ".svgz")):
            raise svg_error from None
        known = _MAGIC_NAMES.get(head[:4])
        kind = ("a text file" if _looks_like_text(head) else f"an {known} file" if known
                else "not a recognised image format")
        raise ImageError(
            f"could not decode image {name!r}: it is {kind} (supported: PNG, JPEG, WebP, BMP, GIF, TIFF, "
            "PPM; convert it to PNG)"
        ) from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"could not decode image {name!r}: the header is corrupt ({exc})") from None
    with img:
        return _from_pil(img, name=name, max_pixels=max_pixels)


def _looks_like_svg(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<?xml", b"<svg", b"<!doctype svg", b"<!--")) and b"<svg" in text


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _pil_bomb_error(stream: BinaryIO, name: str, max_pixels: int, exc: Exception) -> ImageError:
    """Turn Pillow's own DecompressionBombError (size > 2 * MAX_IMAGE_PIXELS) into our message."""
    size = _header_size(stream)
    if size is not None and size[0] * size[1] > max_pixels:
        return _too_large(name, size, max_pixels)
    if size is not None:
        described = f"{size[0]}×{size[1]} = {size[0] * size[1] / 1e6:.1f} MP"
    else:
        match = re.search(r"\((\d+) pixels\)", str(exc))
        described = f"{int(match.group(1)) / 1e6:.1f} MP" if match else "too large"
    pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return ImageError(
        f"image {name!r} is {described}, over Pillow's own limit of {pil_limit / 1e6:.1f} MP; to load it, "
        f"raise PIL.Image.MAX_IMAGE_PIXELS (now {Image.MAX_IMAGE_PIXELS}) as well as max_pixels"
    )


def _header_size(stream: BinaryIO) -> tuple[int, int] | None:
    """(W, H) read through Pillow's format plugins without its bomb check (error path only)."""
    Image.init()
    stream.seek(0)
    prefix = stream.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            result = accept(prefix) if accept is not None else True
            if not result or isinstance(result, str):
                continue
            stream.seek(0)
            return factory(stream, "").size
        except Exception:  # any plugin failure just means "not this format"
            continue
    return None


def _too_large(name: str, size: tuple[int, int], max_pixels: int) -> ImageError:
    width, height = size
    return ImageError(
        f"image {name!r} is {width}×{height} = {width * height / 1e6:.1f} MP; the limit is "
        f"{max_pixels / 1e6:.1f} MP (max_pixels={max_pixels}); downscale the image first"
    )


# ---------------------------------------------------------------------------------------------
# PIL images
# ---------------------------------------------------------------------------------------------


def _from_pil(img: Image.Image, *, name: str, max_pixels: int) -> np.ndarray:
    if img.width * img.height > max_pixels:
        raise _too_large(name, img.size, max_pixels)
    try:
        img.load()  # full decode: a truncated or corrupt file fails here, not later
    except _DECODE_ERRORS as exc:
        detail = "the file is truncated" if "truncat" in str(exc).lower() else f"the data is corrupt ({exc})"
        raise ImageError(f"could not decode image {name!r}: {detail}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS + (KeyError,):
        pass  # a malformed EXIF block: keep the stored orientation rather than refuse the image
    return _pil_to_rgb(img, name=name)


def _pil_to_rgb(img: Image.Image, *, name: str) -> np.ndarray:
    """Any Pillow mode -> H x W x 3 uint8 (rules in the module docstring)."""
    mode = img.mode
    if mode.startswith("I") or mode.startswith("F"):  # I;16*, I, F: single channel, high bit depth
        gray = _to_uint8(np.array(img), name=name)
        return np.repeat(gray[:, :, None], 3, axis=2)  # H x W -> H x W x 3
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _composite_on_white(np.array(img.convert("RGBA")))
    if mode == "RGB":
        return np.array(img)
    try:
        return np.array(img.convert("RGB"))  # L, 1, P, CMYK, YCbCr, RGBX, ...
    except ValueError as exc:
        raise ImageError(f"could not decode image {name!r}: unsupported mode {mode!r} ({exc})") from None


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """H x W x 4 uint8 -> H x W x 3 uint8, alpha-blended over a white background."""
    rgb = rgba[:, :, :3].astype(np.uint16)
    alpha = rgba[:, :, 3:4].astype(np.uint16)  # H x W x 1, broadcasts over the channels
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Numpy arrays
# ---------------------------------------------------------------------------------------------

_ACCEPTED = "accepted: H x W, H x W x {1,3,4} or {1,3,4} x H x W arrays of bool, integer or float dtype"


def _from_array(array: np.ndarray, *, max_pixels: int) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise ImageError(f"cannot read an array of dtype {array.dtype} as an image; {_ACCEPTED}")
    if array.size == 0:
        raise ImageError(f"cannot read an empty array of shape {array.shape} as an image; {_ACCEPTED}")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        if array.shape[0] in (1, 3, 4) and min(array.shape[1:]) > 4:
            array = array.transpose(1, 2, 0)  # C x H x W -> H x W x C
        else:
            raise ImageError(f"cannot read an array of shape {array.shape} as an image; {_ACCEPTED}")
    elif array.ndim not in (2, 3):
        hint = " (a batch? pass images one at a time)" if array.ndim == 4 else ""
        raise ImageError(f"cannot read an array of shape {array.shape} as an image{hint}; {_ACCEPTED}")
    height, width = array.shape[:2]
    if height * width > max_pixels:
        raise _too_large("<array>", (width, height), max_pixels)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)  # the common case: no copy when already contiguous
    array = _to_uint8(array, name="<array>")
    if array.ndim == 2:
        array = array[:, :, None]  # H x W -> H x W x 1
    if array.shape[2] == 4:
        return _composite_on_white(array)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)  # H x W x 1 -> H x W x 3
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, *, name: str) -> np.ndarray:
    """Map bool / integer / float pixel values to uint8 by their range (rules in the module docstring)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind in "iu":
        if array.dtype.itemsize == 2 and array.dtype.kind == "u":
            return _scale_16bit(array)
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return _scale_16bit(array)
        return _stretch(array.astype(np.float64), low, high)
    values = array.astype(np.float64 if array.dtype.itemsize > 4 else np.float32)
    if not np.isfinite(values).all():
        raise ImageError(f"image {name!r} contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return np.rint(values * 255).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(values).astype(np.uint8)
    return _stretch(values, low, high)


def _scale_16bit(array: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (65535 -> 255, 4095 -> 16): scaled, never clipped."""
    return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear min..max -> 0..255 for data in no standard range (a constant array becomes 0)."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
