"""The one transform from a view to an image model's input (SAM encoders), as its metadata says.

Used at run time (station.vision.segmentation), for RKNN calibration data and by the
conversion's parity gate (station.inference.convert), so calibration and parity test the
inputs the station really feeds:

1. RGB (a grey view is replicated to 3 channels);
2. resized: ``longest_side`` keeps the aspect (the longer side becomes ``size``), ``stretch``
   makes it ``size`` x ``size`` (INTER_AREA when shrinking, else INTER_LINEAR);
3. normalised, on the resized image only: ``minmax`` over its own pixels to 0..1, ``meanstd``
   (x - mean) / std, ``scale`` x / 255 (both in 0..255 units);
4. padded bottom/right to ``size`` x ``size`` with 0 after normalisation (SAM's own rule).

A model with its normalisation baked in (an RKNN form) takes uint8 pixels instead:
``model_pixels`` pads with the mean, so the chip's (x - mean) / std gives the same 0 padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.inference.metadata import InputSpec


@dataclass(frozen=True)
class PreparedImage:
    tensor: np.ndarray  # float32 [1, 3, size, size], NCHW
    model_hw: tuple[int, int]  # the image's extent inside the padded input (H, W px)
    scale_x: float  # model px per view px
    scale_y: float


def _resized(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    if spec.resize == "longest_side":
        s = spec.size / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
    else:
        nh, nw = spec.size, spec.size
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR)


def _normalised(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    x = pixels.astype(np.float32)
    if spec.normalization == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / max(hi - lo, 1e-8)
    if spec.normalization == "scale":
        return x / 255.0
    return (x - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)


def prepare_image(image: np.ndarray, spec: InputSpec) -> PreparedImage:
    """float32 model input for a uint8 HxW or HxWx3 RGB view (steps 1-4 of the module doc)."""
    h, w = image.shape[:2]
    resized = _resized(image, spec)
    nh, nw = resized.shape[:2]
    padded = np.zeros((spec.size, spec.size, 3), np.float32)
    padded[:nh, :nw] = _normalised(resized, spec)
    return PreparedImage(padded.transpose(2, 0, 1)[None], (nh, nw), nw / w, nh / h)


def model_pixels(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 [size, size, 3] RGB for a model whose normalisation is baked in: resized as
    ``prepare_image`` does, padded with the mean (``meanstd``) or 0 (``scale``). A ``minmax``
    model depends on each image's range and cannot be baked: ValueError."""
    if spec.normalization == "minmax":
        raise ValueError("min-max normalisation depends on each image: it cannot be baked into a model")
    resized = _resized(image, spec)
    nh, nw = resized.shape[:2]
    fill = np.rint(spec.mean).astype(np.uint8) if spec.normalization == "meanstd" else np.zeros(3, np.uint8)
    out = np.empty((spec.size, spec.size, 3), np.uint8)
    out[:] = fill
    out[:nh, :nw] = resized
    return out
