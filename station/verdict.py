"""Recipe rules -> Verdict: per class minimum area (px or mm²), minimum confidence, review
band, maximum count, inspection and ignore zones.

A defect counts when its confidence >= the class's ``min_confidence`` and its area *inside
the inspected region* (inspect zones minus ignore zones; the whole view if there are no
inspect zones) reaches ``min_area_px`` and, when set, ``min_area_mm2`` (via the recipe's
``mm_per_px``). A class rejects the part when more than ``max_count`` of its defects count
on one view. A defect whose class the recipe does not know rejects (fail-safe). The part is
rejected when any view rejects; the reason names the top defect:
"crack 3.1 mm² > 0.5 mm² in zone A". ``plc_code`` is the top defect's class code, 0 for a pass.

Review band: a defect large enough to count whose confidence is at or above the class's
``review_at`` but below its ``min_confidence`` is *doubtful*. When nothing rejects the part
and a class on a view would reject it if its doubtful defects counted, the verdict is REVIEW
(the strongest doubtful defect on top, ``plc_code`` ``REVIEW_PLC_CODE``): the part is
diverted for a person, never passed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from station.inspection import REVIEW_PLC_CODE, Defect, Outcome, RejectReason, Verdict
from station.recipe import DefectClass, Recipe
from station.vision.regions import zone_mask, zones_for_view

UNKNOWN_CLASS_PLC_CODE = 0xFFFE


def locate(defect: Defect, recipe: Recipe, shape: tuple[int, int]) -> Defect:
    """``defect`` with its zone, its area inside the inspected region (``counted_area_px``) and,
    with the recipe's ``mm_per_px``, that area in mm²; ``shape`` is its view's (H, W) px."""
    zones = zones_for_view(recipe.zones, defect.view)
    mask, cap = defect.mask, None
    if mask is None or mask.shape != shape:  # no mask: the box stands for the region, up to its area
        mask = np.zeros(shape, bool)
        x0, y0, x1, y1 = defect.box
        mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
        cap = defect.area_px or None
    for z in zones:
        if z.kind == "ignore":
            mask = mask & ~zone_mask(z, shape)
    inspect = [z for z in zones if z.kind == "inspect"]
    zone = None
    if inspect:
        inside = [(int((mask & zone_mask(z, shape)).sum()), z.name) for z in inspect]
        best, name = max(inside)
        covered = np.zeros(shape, bool)
        for z in inspect:
            covered |= zone_mask(z, shape)
        area = int((mask & covered).sum())
        zone = name if best > 0 else None
    else:
        area = int(mask.sum())
    if cap is not None:
        area = min(area, cap)
    area_mm2 = None if recipe.mm_per_px is None else area * recipe.mm_per_px**2
    return replace(defect, zone=zone, area_mm2=area_mm2, counted_area_px=area)


def locate_all(defects: list[Defect], recipe: Recipe, shapes: dict[str, tuple[int, int]]) -> list[Defect]:
    """Every defect located (``locate``) on its view; ``shapes``: view name -> (H, W) px."""
    out = []
    for d in defects:
        shape = shapes.get(d.view)
        if shape is None:
            raise ValueError(f"defect on view {d.view!r}, which this part does not have ({sorted(shapes)})")
        out.append(locate(d, recipe, shape))
    return out


def _limit_text(d: Defect, cls: DefectClass, area_px: int) -> str:
    where = f" in zone {d.zone}" if d.zone else ""
    if cls.min_area_mm2 is not None and d.area_mm2 is not None:
        return f"{cls.name} {d.area_mm2:.1f} mm² > {cls.min_area_mm2:g} mm²{where}"
    if d.area_mm2 is not None:
        return f"{cls.name} {d.area_mm2:.1f} mm² ({area_px} px > {cls.min_area_px} px){where}"
    return f"{cls.name} {area_px} px > {cls.min_area_px} px{where}"


def decide(defects: list[Defect], recipe: Recipe) -> Verdict:
    """The part's verdict from its (located) defects and the recipe's rules. Pure: nothing is changed."""
    known = {c.name: c for c in recipe.classes}
    counting: dict[tuple[str, str], list[tuple[Defect, int]]] = defaultdict(list)
    doubtful: dict[tuple[str, str], list[tuple[Defect, int]]] = defaultdict(list)
    for d in defects:
        area = d.area_px if d.counted_area_px is None else d.counted_area_px
        cls = known.get(d.class_name)
        if cls is None:
            return Verdict(
                Outcome.REJECT, f"unknown defect class {d.class_name!r} (not in recipe {recipe.name})",
                RejectReason.DEFECT, d, UNKNOWN_CLASS_PLC_CODE,
            )
        if area == 0 or area < cls.min_area_px:
            continue
        if cls.min_area_mm2 is not None and (d.area_mm2 or 0.0) < cls.min_area_mm2:
            continue
        review_at = recipe.review_at_of(cls)
        if d.confidence >= recipe.min_confidence_of(cls):
            counting[(d.view, cls.name)].append((d, area))
        elif review_at is not None and d.confidence >= review_at:
            doubtful[(d.view, cls.name)].append((d, area))
    rejects = []
    for (view, name), items in counting.items():
        cls = known[name]
        if len(items) > cls.max_count:
            top, area = max(items, key=lambda it: (it[0].confidence, it[1]))
            rejects.append((top, area, cls, len(items)))
    if rejects:
        top, area, cls, count = max(rejects, key=lambda r: (r[0].confidence, r[1]))
        reason = _limit_text(top, cls, area)
        if cls.max_count:
            reason += f" ({count} > max {cls.max_count})"
        if len(rejects) > 1:
            reason += f" (+{len(rejects) - 1} more)"
        return Verdict(Outcome.REJECT, reason, RejectReason.DEFECT, top, cls.plc_code)
    reviews = []
    for key, items in doubtful.items():
        cls = known[key[1]]
        together = len(counting.get(key, [])) + len(items)
        if together > cls.max_count:  # it would reject if the doubtful findings counted
            top, area = max(items, key=lambda it: (it[0].confidence, it[1]))
            reviews.append((top, area, cls, together))
    if reviews:
        top, area, cls, count = max(reviews, key=lambda r: (r[0].confidence, r[1]))
        reason = (f"review: {_limit_text(top, cls, area)}, confidence {top.confidence:.2f} in the review band "
                  f"[{recipe.review_at_of(cls):g}, {recipe.min_confidence_of(cls):g})")
        if cls.max_count:
            reason += f" ({count} > max {cls.max_count} with the doubtful ones)"
        if len(reviews) > 1:
            reason += f" (+{len(reviews) - 1} more)"
        return Verdict(Outcome.REVIEW, reason, None, top, REVIEW_PLC_CODE)
    n = len(defects)
    return Verdict(Outcome.PASS, "no defect" if n == 0 else f"{n} finding(s) below the recipe's limits")
