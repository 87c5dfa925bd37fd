"""GenICam (PFNC) pixel formats → numpy images in the station's one layout.

The station's layout (see station/camera/base.py):

- mono: ``uint8`` array of shape (H, W);
- colour: ``uint8`` array of shape (H, W, 3), channels in **RGB** order;
- row 0 is the top line of the sensor readout, column 0 its left edge (the device's
  ReverseX/ReverseY features, if any, are applied by the device before this).

Wider mono formats (Mono10, Mono12, Mono16, little-endian, one pixel per 16-bit word as the
PFNC defines them) are reduced to 8 bits by dropping the low bits (``value >> (bits - 8)``),
so a full-scale 10-bit value 1023 becomes 255. The native-depth image (``uint16`` holding
the device's values 0..2**bits-1) is available from ``unpack(..., native_depth=True)`` for
tools that want it (``station camera grab`` writes 16-bit PNGs from it).

Bayer 8-bit mosaics are named by their top-left 2x2 cell, left to right, top to bottom
(BayerRG8: R G / G B), and demosaiced by OpenCV's edge-aware interpolation to RGB.

Every function returns an array that owns its memory, so the driver's buffer can be
handed back to the producer as soon as the call returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.images import ImageError


class PixelFormatError(ValueError):
    """The pixel format is not supported."""


class PayloadSizeError(ImageError, PixelFormatError):
    """The payload's size is not what width x height x pixel format (and line padding) make: a
    truncated or mis-described frame, never inspected (the pipeline rejects it as image_error)."""


@dataclass(frozen=True)
class PixelFormat:
    name: str
    bytes_per_pixel: int
    bits: int  # significant bits per channel
    kind: str  # "mono", "bayer", "rgb", "bgr", "rgba"


FORMATS: dict[str, PixelFormat] = {
    f.name: f
    for f in [
        PixelFormat("Mono8", 1, 8, "mono"),
        PixelFormat("Mono10", 2, 10, "mono"),
        PixelFormat("Mono12", 2, 12, "mono"),
        PixelFormat("Mono16", 2, 16, "mono"),
        PixelFormat("BayerRG8", 1, 8, "bayer"),
        PixelFormat("BayerGR8", 1, 8, "bayer"),
        PixelFormat("BayerGB8", 1, 8, "bayer"),
        PixelFormat("BayerBG8", 1, 8, "bayer"),
        PixelFormat("RGB8", 3, 8, "rgb"),
        PixelFormat("BGR8", 3, 8, "bgr"),
        PixelFormat("RGBa8", 4, 8, "rgba"),
    ]
}

# OpenCV names a Bayer pattern by the second row's 2nd and 3rd pixels, not the top-left
# cell as the PFNC does, so each GenICam name maps to OpenCV's "opposite" one.
_BAYER_TO_CV = {
    "BayerRG8": cv2.COLOR_BayerBG2RGB_EA,
    "BayerGR8": cv2.COLOR_BayerGB2RGB_EA,
    "BayerGB8": cv2.COLOR_BayerGR2RGB_EA,
    "BayerBG8": cv2.COLOR_BayerRG2RGB_EA,
}


def pixel_format(name: str) -> PixelFormat:
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(FORMATS)
        raise PixelFormatError(f"pixel format {name!r} is not supported (supported: {known})") from None


def _rows(data, width: int, height: int, fmt: PixelFormat, line_padding_bytes: int) -> np.ndarray:
    """The payload as a (height, width * bytes_per_pixel) uint8 view, line padding dropped."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    raw = raw.reshape(-1).view(np.uint8)
    line_bytes = width * fmt.bytes_per_pixel
    stride = line_bytes + line_padding_bytes
    need = stride * height - line_padding_bytes  # the last line's padding may be absent
    if width <= 0 or height <= 0 or raw.size not in (need, stride * height):
        # shorter: a truncated frame; longer: the frame is not what its width, height and
        # format say (a wrong format or a wrong size would be inspected as a scrambled image)
        raise PayloadSizeError(
            f"{fmt.name} {width}x{height} needs {need} bytes (line padding {line_padding_bytes}), got {raw.size}"
        )
    if raw.size < stride * height:
        raw = np.concatenate([raw[:need], np.zeros(stride * height - need, np.uint8)])
    return raw[: stride * height].reshape(height, stride)[:, :line_bytes]


def unpack(data, width: int, height: int, format_name: str, line_padding_bytes: int = 0,
           native_depth: bool = False) -> np.ndarray:
    """Convert one image payload to the station layout (see the module docstring).

    ``data``: the payload bytes (bytes, memoryview or any numpy array, viewed as uint8).
    ``width``, ``height``: px. ``line_padding_bytes``: bytes after each line (PFNC padding_x).
    ``native_depth``: return >8-bit mono as uint16 device values instead of scaling to uint8.
    """
    fmt = pixel_format(format_name)
    rows = _rows(data, width, height, fmt, line_padding_bytes)
    if fmt.kind == "mono":
        if fmt.bytes_per_pixel == 1:
            return rows.copy()
        # PFNC unpacked 10/12/16-bit: little-endian 16-bit words, value in the low bits
        words = np.ascontiguousarray(rows).view("<u2").astype(np.uint16)
        if native_depth:
            return words
        return (words >> (fmt.bits - 8)).astype(np.uint8)
    if fmt.kind == "bayer":
        return cv2.cvtColor(np.ascontiguousarray(rows), _BAYER_TO_CV[fmt.name])
    pixels = rows.reshape(height, width, fmt.bytes_per_pixel)
    if fmt.kind == "rgb":
        return pixels.copy()
    if fmt.kind == "bgr":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    return np.ascontiguousarray(pixels[:, :, :3])  # rgba: alpha carries nothing for inspection


def to_station_image(data, width: int, height: int, format_name: str, line_padding_bytes: int = 0) -> np.ndarray:
    """``unpack`` to the station's uint8 layout (>8-bit mono scaled by dropping low bits)."""
    return unpack(data, width, height, format_name, line_padding_bytes, native_depth=False)


# ---- the inverse, for tests and the CLI's self-check: station layout → payload ---------------
def pack(image: np.ndarray, format_name: str) -> bytes:
    """Encode an image as a payload of ``format_name`` (no line padding).

    mono formats take HxW (uint8 for Mono8, uint16 device values for wider ones);
    colour formats take HxWx3 RGB uint8; Bayer formats sample the RGB image through the mosaic.
    """
    fmt = pixel_format(format_name)
    if fmt.kind == "mono":
        dtype = np.uint8 if fmt.bytes_per_pixel == 1 else np.dtype("<u2")
        return np.ascontiguousarray(image, dtype=dtype).tobytes()
    if image.ndim != 3 or image.shape[2] != 3:
        raise PixelFormatError(f"{fmt.name} needs an HxWx3 RGB image, got shape {image.shape}")
    if fmt.kind == "rgb":
        return np.ascontiguousarray(image, np.uint8).tobytes()
    if fmt.kind == "bgr":
        return np.ascontiguousarray(image[:, :, ::-1], np.uint8).tobytes()
    if fmt.kind == "rgba":
        alpha = np.full(image.shape[:2] + (1,), 255, np.uint8)
        return np.ascontiguousarray(np.concatenate([image, alpha], axis=2)).tobytes()
    cell = fmt.name[5:7]  # e.g. "RG": top-left cell, left to right, then "G?" / "?G" below
    layout = {"RG": "RGGB", "GR": "GRBG", "GB": "GBRG", "BG": "BGGR"}[cell]
    channel = {"R": 0, "G": 1, "B": 2}
    mosaic = np.empty(image.shape[:2], np.uint8)
    for i, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        mosaic[dy::2, dx::2] = image[dy::2, dx::2, channel[layout[i]]]
    return mosaic.tobytes()
