"""Defect masks as run-length text, within the defect's box.

Format: ``"H W v c1 c2 …"`` — the box height and width (px), the value of the first run
(0 or 1), then run lengths over the box in row-major order. Compact for the blobby masks
SAM produces and readable by any language without numpy.
"""

from __future__ import annotations

import numpy as np


def crop(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part of ``mask`` (bool HxW, view frame) inside ``box`` (x0, y0, x1, y1), clipped at 0."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    x0, y0, x1, y1 = (int(v) for v in box)
    return m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)]


def encode(mask: np.ndarray, box: tuple[int, int, int, int] | None = None) -> str:
    """RLE of ``mask`` (bool HxW in the view's frame) cropped to ``box`` (x0, y0, x1, y1)."""
    m = crop(mask, box) if box is not None else np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    h, w = m.shape
    flat = m.ravel()
    if flat.size == 0:
        return f"{h} {w} 0"
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(edges)
    return f"{h} {w} {int(flat[0])} " + " ".join(map(str, runs.tolist()))


def decode(text: str) -> np.ndarray:
    """The bool mask (box height x box width) that ``encode`` produced."""
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(f"malformed mask RLE {text[:40]!r}")
    h, w, first = int(parts[0]), int(parts[1]), int(parts[2])
    runs = np.array([int(p) for p in parts[3:]], dtype=np.int64)
    if runs.sum() != h * w:
        raise ValueError(f"mask RLE runs sum to {runs.sum()}, expected {h}x{w}")
    values = (np.arange(runs.size) + first) % 2 == 1
    return np.repeat(values, runs).reshape(h, w)


def paste(text: str, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """The mask back in the view's frame (bool ``shape``), placed at ``box``."""
    out = np.zeros(shape, dtype=bool)
    crop = decode(text)
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    out[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return out
