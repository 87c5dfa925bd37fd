"""What the station accepts as an image to inspect, and the one error for anything else.

Every place that hands pixels to the vision stage checks them here, so a broken image becomes
a fail-safe REJECT with reason ``image_error`` in the pipeline and a skipped row with its reason
in the offline commands, never a verdict.
"""

from __future__ import annotations

import cv2
import numpy as np


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
