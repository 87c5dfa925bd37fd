"""Masks to regions: connected components with box, area and shape, and zone masks.

All coordinates are pixels of the view (x right, y down); boxes are (x0, y0, x1, y1), x1/y1
exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.recipe import Zone


@dataclass(frozen=True)
class Region:
    mask: np.ndarray  # bool HxW, the component only
    box: tuple[int, int, int, int]
    area_px: int
    circularity: float  # 4*pi*area/perimeter^2: ~1 for a disc, -> 0 for a thin line


def components(mask: np.ndarray, min_area_px: int = 1, connectivity: int = 8) -> list[Region]:
    """Connected components of a bool mask, largest first."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=connectivity)
    regions = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area_px:
            continue
        comp = labels == i
        regions.append(Region(comp, (x, y, x + w, y + h), area, circularity(comp[y : y + h, x : x + w])))
    regions.sort(key=lambda r: -r.area_px)
    return regions


def circularity(mask: np.ndarray) -> float:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    area = float(mask.sum())
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    # contours run through pixel centres, so small blobs come out > 1: clip
    return float(min(1.0, 4 * np.pi * area / max(perimeter, 1.0) ** 2))


def zone_mask(zone: Zone, shape: tuple[int, int]) -> np.ndarray:
    """bool HxW of a rectangle or polygon zone, clipped to the image."""
    h, w = shape
    out = np.zeros((h, w), np.uint8)
    if zone.rect is not None:
        x0, y0, x1, y1 = zone.rect
        out[max(0, y0) : max(0, min(h, y1)), max(0, x0) : max(0, min(w, x1))] = 1
    else:
        cv2.fillPoly(out, [np.array(zone.polygon, np.int32)], 1)
    return out.astype(bool)


def zones_for_view(zones: list[Zone], view: str) -> list[Zone]:
    return [z for z in zones if z.view is None or z.view == view]


def roi_mask(zones: list[Zone], view: str, shape: tuple[int, int]) -> np.ndarray:
    """Where a view is inspected: the union of its inspect zones (all of it if none), minus ignore zones."""
    mine = zones_for_view(zones, view)
    inspect = [z for z in mine if z.kind == "inspect"]
    roi = np.zeros(shape, bool) if inspect else np.ones(shape, bool)
    for z in inspect:
        roi |= zone_mask(z, shape)
    for z in mine:
        if z.kind == "ignore":
            roi &= ~zone_mask(z, shape)
    return roi


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return (0, 0, 0, 0)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
