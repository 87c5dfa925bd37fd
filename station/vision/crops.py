"""Crops around a proposed region, the classifier's input.

A crop is the region's box grown by ``CONTEXT`` on every side (at least ``MIN_SIDE_PX``),
made square around the box centre, cut from the grey view (reflecting at the border) and
resized to S x S. Channels: grey 0..1 and the region's mask 0/1. float32 [2, S, S].
"""

from __future__ import annotations

import cv2
import numpy as np

CONTEXT = 0.5
MIN_SIDE_PX = 24


def crop_window(box: tuple[int, int, int, int], context: float = CONTEXT, min_side: int = MIN_SIDE_PX) -> tuple[int, int, int]:
    """(cx, cy, side) px of the square window around ``box``."""
    x0, y0, x1, y1 = box
    side = int(max(min_side, round(max(x1 - x0, y1 - y0) * (1 + 2 * context))))
    return (x0 + x1) // 2, (y0 + y1) // 2, side


def region_crop(grey: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], size: int,
                context: float = CONTEXT) -> np.ndarray:
    cx, cy, side = crop_window(box, context)
    half = side // 2
    pad = side + 2
    g = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    m = cv2.copyMakeBorder(mask.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    ys, xs = cy - half + pad, cx - half + pad
    gc = cv2.resize(g[ys : ys + side, xs : xs + side], (size, size), interpolation=cv2.INTER_AREA)
    mc = cv2.resize(m[ys : ys + side, xs : xs + side].astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return np.stack([gc.astype(np.float32) / 255.0, (mc > 0.25).astype(np.float32)])
