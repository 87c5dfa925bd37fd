"""What the station accepts as an image to inspect, the one way image files are decoded, and
the one error for anything else.

Every place that hands pixels to the vision stage checks them here, so a broken image becomes
a fail-safe REJECT with reason ``image_error`` in the pipeline and a skipped row with its reason
in the offline commands, never a verdict.

Decoding (``decode_image``) refuses, with ``ImageError`` saying why:

- an image whose header announces more than ``max_pixels`` (a station-file setting, default
  40 MP) — read from the header, before any pixel memory is allocated or decoded;
- a truncated or corrupt file. JPEG goes through libjpeg-turbo in strict mode (``simplejpeg``):
  a missing end-of-image marker, entropy data that runs out ("premature end of data segment")
  and every other warning libjpeg would otherwise repair by filling grey are errors. OpenCV
  and Pillow both fill a JPEG cut to a third of its length and return it. PNG, BMP and TIFF go
  through Pillow: its header parse gives the size, ``verify`` checks every PNG chunk's CRC and
  the IEND chunk, ``load`` raises when the data ends before the last row.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: above any line-scan crop the station inspects

_JPEG_SOI = b"\xff\xd8"


class ImageError(ValueError):
    """An image the station cannot inspect (wrong type, wrong bit depth, empty, truncated, too large)."""


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return ``image`` if it is uint8 HxW or HxWx3 (HxWx4 and HxWx1 are converted), else raise
    ImageError saying why."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{what}: not an array ({type(image).__name__})")
    if image.dtype != np.uint8:
        raise ImageError(f"{what}: bit depth {image.dtype} is not supported (expected 8-bit, uint8)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"{what}: shape {image.shape} is not HxW or HxWx3")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageError(f"{what}: {image.shape[1]}x{image.shape[0]} px is too small to inspect")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    return image


def check_pixel_count(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """Raise ImageError if ``width`` x ``height`` px is more than ``max_pixels`` (or not positive)."""
    if width <= 0 or height <= 0:
        raise ImageError(f"{what}: header announces {width}x{height} px")
    if width * height > max_pixels:
        raise ImageError(f"{what}: header announces {width}x{height} px ({width * height / 1e6:.1f} MP), more than the "
                         f"limit of {max_pixels / 1e6:g} MP (station file: [pipeline] max_image_megapixels); not decoded")


def read_image_file(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS, wide: str = "reduce") -> np.ndarray:
    """Read and decode an image file (see ``decode_image``). Raises ImageError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image {path} not found") from None
    except OSError as exc:
        raise ImageError(f"image {path} cannot be read: {exc.strerror or exc}") from None
    return decode_image(data, f"image {path}", max_pixels=max_pixels, wide=wide)


def decode_image(data: bytes, what: str = "image", *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 wide: str = "reduce") -> np.ndarray:
    """Decode JPEG, PNG, BMP or TIFF bytes to uint8 HxW (mono; also colour files whose channels
    are all equal) or HxWx3 RGB.

    ``wide``: what to do with 16-bit samples: ``"reduce"`` keeps the high byte (as cameras do),
    ``"refuse"`` raises ImageError. Raises ImageError for anything not decodable as a whole
    (module docstring): too many pixels announced, truncated, corrupt, unsupported.
    """
    if not data:
        raise ImageError(f"{what} is empty (0 bytes)")
    if data[:2] == _JPEG_SOI:
        image = _decode_jpeg(data, what, max_pixels)
    else:
        image = _decode_other(data, what, max_pixels, wide)
    if image.ndim == 3 and np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]):
        image = np.ascontiguousarray(image[:, :, 0])  # grey stored as colour
    return image


def _decode_jpeg(data: bytes, what: str, max_pixels: int) -> np.ndarray:
    try:
        height, width, colourspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise ImageError(f"{what}: corrupt JPEG header ({exc})") from None
    check_pixel_count(width, height, max_pixels, what)
    if colourspace.upper() in ("CMYK", "YCCK"):
        raise ImageError(f"{what}: {colourspace} JPEG is not supported (expected grey or colour)")
    target = "GRAY" if colourspace.lower() == "gray" else "RGB"
    try:  # strict: libjpeg's warnings (truncated, corrupt data) raise instead of being filled grey
        image = simplejpeg.decode_jpeg(data, colorspace=target, strict=True)
    except ValueError as exc:
        kind = "truncated" if "premature end" in str(exc).lower() else "corrupt"
        raise ImageError(f"{what}: {kind} JPEG ({exc}); not inspected") from None
    return image[:, :, 0] if target == "GRAY" else image


def _open(data: bytes, what: str, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))  # the header only: no pixel is decoded here
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling (about 179 MP), above any limit we allow
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 0
        raise ImageError(f"{what}: header announces {pixels} px ({pixels / 1e6:.1f} MP), more than the limit of "
                         f"{max_pixels / 1e6:g} MP (station file: [pipeline] max_image_megapixels); not decoded") from None
    except UnidentifiedImageError:
        raise ImageError(f"{what} is unreadable (not an image file, or its header is corrupt)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{what} is unreadable (corrupt header: {exc})") from None


def _decode_other(data: bytes, what: str, max_pixels: int, wide: str) -> np.ndarray:
    im = _open(data, what, max_pixels)
    width, height = im.size
    check_pixel_count(width, height, max_pixels, what)
    fmt = im.format or "image"
    try:
        if fmt == "PNG":
            im.verify()  # every chunk's CRC and the IEND chunk, without decompressing
            im = _open(data, what, max_pixels)  # verify leaves the image unusable: open again to decode
        im.load()  # raises when the data ends before the last row
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error… for broken data
        text = str(exc)
        kind = "truncated" if "truncated" in text.lower() else "corrupt"
        raise ImageError(f"{what}: {kind} {fmt} ({text}); not inspected") from None
    return _to_station_layout(im, what, wide)


def _to_station_layout(im: Image.Image, what: str, wide: str) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "RGB"):
        return np.asarray(im).copy()
    if mode.startswith("I;16"):
        if wide == "refuse":
            raise ImageError(f"{what} has bit depth 16 (expected 8-bit)")
        return (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
    if mode in ("I", "F"):
        raise ImageError(f"{what} has bit depth 32 ({mode}) (expected 8-bit)")
    if mode in ("1", "LA", "La"):
        return np.asarray(im.convert("L")).copy()
    return np.asarray(im.convert("RGB")).copy()  # RGBA, P (palette), CMYK, YCbCr …


__all__ = ["ImageError", "DEFAULT_MAX_PIXELS", "check_image", "check_pixel_count", "decode_image", "read_image_file"]
