"""The recipe's image preprocessing: grey conversion, CLAHE, Gaussian denoise.

Views stay in their own pixel frame (no resize, no crop), so defect coordinates found on a
preprocessed view are coordinates on the camera image.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from station.inspection import View
from station.recipe import Preprocess


class ImageError(ValueError):
    """An image the station cannot inspect (wrong type, wrong bit depth, empty)."""


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return ``image`` if it is uint8 HxW or HxWx3 (or HxWx4), else raise ImageError saying why."""
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


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 HxW from a uint8 HxW or HxWx3 RGB image."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def preprocess_image(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    image = check_image(image)
    if spec.to_gray:
        image = to_gray(image)
    if spec.clahe:
        clahe = cv2.createCLAHE(clipLimit=spec.clahe_clip, tileGridSize=(8, 8))
        if image.ndim == 2:
            image = clahe.apply(image)
        else:  # equalise lightness only, so colours keep their hue
            lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
            lab[:, :, 0] = clahe.apply(lab[:, :, 0])
            image = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    if spec.denoise_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), spec.denoise_sigma)
    return image


def preprocess_views(views: list[View], spec: Preprocess) -> list[View]:
    return [replace(v, image=preprocess_image(v.image, spec)) for v in views]
