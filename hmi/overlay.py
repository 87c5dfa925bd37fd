"""Draw a part's defects on its image and encode it for the browser.

Coordinates are the view's pixels (origin top-left). Colours come from the recipe's defect
classes (``#rrggbb``); a class the recipe does not know is drawn in magenta.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cv2
import numpy as np

from station.inspection import Defect

UNKNOWN_COLOUR = (255, 0, 255)
MASK_ALPHA = 0.45


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB from a mono or RGB uint8 image (wider types are clipped to 0..255)."""
    img = image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)
    return img


def render_overlay(image: np.ndarray, defects: Iterable[Defect], colours: Mapping[str, str]) -> np.ndarray:
    """Coloured masks, mask contours, boxes and "class 0.93" labels on a copy of ``image`` (RGB)."""
    out = as_rgb(image).copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    font_scale = max(0.5, max(h, w) / 1000)
    for d in defects:
        rgb = hex_to_rgb(colours[d.class_name]) if d.class_name in colours else UNKNOWN_COLOUR
        if d.mask is not None and d.mask.shape[:2] == (h, w):
            mask = d.mask.astype(bool)
            out[mask] = (out[mask] * (1 - MASK_ALPHA) + np.array(rgb) * MASK_ALPHA).astype(np.uint8)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, rgb, thick)
        x0, y0, x1, y1 = (int(v) for v in d.box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), rgb, thick)
        label = f"{d.class_name} {d.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else min(h - 1, y1 + th + 4)
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 4, ty + base), (0, 0, 0), -1)
        cv2.putText(out, label, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, rgb, thick, cv2.LINE_AA)
    return out


def encode_jpeg(rgb: np.ndarray, max_side_px: int = 1024, quality: int = 80) -> bytes:
    """JPEG bytes of an RGB image, scaled down (never up) so its longer side is <= max_side_px."""
    img = as_rgb(rgb)
    h, w = img.shape[:2]
    scale = max_side_px / max(h, w)
    if scale < 1:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
