"""Encode a rendered overlay for the browser.

Drawing the overlay is ``station.vision.overlay.render_overlay``'s job (one renderer for the
HMI, the image archive and `station inspect`); this module only scales and compresses.
"""

from __future__ import annotations

import cv2
import numpy as np

from station.vision.overlay import as_rgb

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
