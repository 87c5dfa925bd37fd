"""The recipe's image preprocessing: grey conversion, contrast equalisation (OpenCV's CLAHE or
scikit-image's ``exposure.equalize_adapthist``), Gaussian denoise.

Views stay in their own pixel frame (no resize, no crop), so defect coordinates found on a
preprocessed view are coordinates on the camera image.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
from skimage import exposure

from station.images import check_image
from station.inspection import View
from station.recipe import Preprocess


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
    if spec.equalize_adapthist:
        image = equalize_adapthist(image, spec.adapthist_clip_limit, spec.adapthist_kernel_px)
    if spec.denoise_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), spec.denoise_sigma)
    return image


def equalize_adapthist(image: np.ndarray, clip_limit: float, kernel_px: int | None) -> np.ndarray:
    """uint8 image of the same shape: scikit-image's adaptive histogram equalisation (on a colour
    image, of its value channel only, so colours keep their hue), rounded back to uint8."""
    out = exposure.equalize_adapthist(image, kernel_size=kernel_px, clip_limit=clip_limit)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def model_view_settings(spec: Preprocess) -> dict:
    """The preprocessing settings that change the pixels a model sees (grey conversion aside: the
    models grey a view themselves): written into a trained head's metadata, checked against the
    recipe when the head is loaded (a head trained on equalised views means little on raw ones)."""
    return spec.model_dump(exclude={"to_gray"})


def preprocess_views(views: list[View], spec: Preprocess) -> list[View]:
    return [replace(v, image=preprocess_image(v.image, spec)) for v in views]
