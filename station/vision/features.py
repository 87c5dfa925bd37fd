"""Per-pixel features for the proposal stage: a multi-scale filter bank on the grey view.

Computed with OpenCV at native resolution (a few ms per 300x300 view); the trained part of the
proposal model (a per-pixel MLP as 1x1 convolutions) runs on them through the inference
backend. Output: float32 [F, H, W] in the view's pixel frame. The grey image is first
standardised robustly (median, MAD), so a change of lighting level or gain does not move the
features. ``FEATURE_SET`` names this exact recipe of filters; a model records the set it was
trained on and is refused with another.
"""

from __future__ import annotations

import cv2
import numpy as np

FEATURE_SET = "msfb-v1"
SCALES_PX = (1.0, 2.0, 4.0, 8.0)
CONTEXT_SCALE_PX = 16.0
BORDER_PX = 24.0


def feature_names() -> list[str]:
    names = []
    for s in SCALES_PX:
        names += [f"g{s:g}", f"dog{s:g}", f"grad{s:g}", f"hess_hi{s:g}", f"hess_lo{s:g}", f"std{s:g}"]
    return names + [f"g{CONTEXT_SCALE_PX:g}", f"std{CONTEXT_SCALE_PX:g}", "border"]


N_FEATURES = len(feature_names())


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def pixel_features(grey: np.ndarray) -> np.ndarray:
    """float32 [N_FEATURES, H, W] for a uint8 HxW grey image."""
    g = grey.astype(np.float32)
    med = float(np.median(g))
    mad = float(np.median(np.abs(g - med))) * 1.4826
    g = (g - med) / (mad + 2.0)
    feats = []
    sq = g * g
    for s in SCALES_PX:
        gs = _blur(g, s)
        feats.append(gs)
        feats.append(gs - _blur(g, 4 * s))
        gx = cv2.Sobel(gs, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(gs, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        feats.append(np.sqrt(gx * gx + gy * gy) * s)
        # Hessian eigenvalues, scale-normalised (s^2): ridges (cracks) and blobs (holes)
        dxx = cv2.Sobel(gs, cv2.CV_32F, 2, 0, ksize=3) / 4.0
        dyy = cv2.Sobel(gs, cv2.CV_32F, 0, 2, ksize=3) / 4.0
        dxy = cv2.Sobel(gs, cv2.CV_32F, 1, 1, ksize=3) / 4.0
        half_tr, root = (dxx + dyy) / 2, np.sqrt(((dxx - dyy) / 2) ** 2 + dxy * dxy)
        feats.append((half_tr + root) * s * s)
        feats.append((half_tr - root) * s * s)
        feats.append(np.sqrt(np.maximum(_blur(sq, 2 * s) - _blur(g, 2 * s) ** 2, 0)))
    feats.append(_blur(g, CONTEXT_SCALE_PX))
    feats.append(np.sqrt(np.maximum(_blur(sq, CONTEXT_SCALE_PX) - _blur(g, CONTEXT_SCALE_PX) ** 2, 0)))
    h, w = g.shape
    yy = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
    xx = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
    feats.append(np.minimum(np.minimum(yy, xx) / BORDER_PX, 1.0).astype(np.float32))
    out = np.stack(feats).astype(np.float32)
    return np.clip(out, -20.0, 20.0)
