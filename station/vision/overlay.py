"""The overlay the HMI and the image archive show: per-class semi-transparent masks with
contours, boxes, "class 0.93" labels, zone outlines and a verdict banner.

Input image: uint8 HxW or HxWx3 RGB. Output: a new uint8 HxWx3 RGB image, same size (the
banner is drawn over the top rows, under the defects, so pixel coordinates stay those of the
view and a defect near the top edge stays visible).
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from station.inspection import Defect, Outcome, Verdict
from station.recipe import Recipe

MASK_ALPHA = 0.45
UNKNOWN_RGB = (255, 0, 255)
PASS_RGB = (40, 167, 69)
REJECT_RGB = (220, 38, 38)
REVIEW_RGB = (217, 119, 6)  # amber: sent to a person
INSPECT_ZONE_RGB = (90, 160, 255)
IGNORE_ZONE_RGB = (128, 128, 128)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def as_rgb(image: np.ndarray) -> np.ndarray:
    img = image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)
    return img.copy()


MIN_TEXT_SCALE = 0.3


def _label(out: np.ndarray, text: str, x: int, y: int, rgb, scale: float, thick: int, top: int = 0,
           taken: list[tuple[int, int, int, int]] | None = None) -> None:
    """A label on a black ground above ``y``, or below it when that would cover rows < ``top``
    (the verdict banner); moved down past the labels already in ``taken`` (x0, y0, x1, y1),
    and added to it, so two defects close together keep both labels readable."""
    h, w = out.shape[:2]
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    ty = y - 4 if y - th - base - 4 >= top else min(h - base - 1, max(y, top) + th + base + 4)
    x = int(np.clip(x, 0, max(0, w - tw - 4)))
    taken = [] if taken is None else taken
    for _ in range(len(taken)):
        hit = [r for r in taken if x < r[2] and r[0] < x + tw + 4 and ty - th - base < r[3] and r[1] < ty + base]
        if not hit or ty + th + 2 * base >= h:
            break
        ty = min(h - base - 1, max(r[3] for r in hit) + th + base + 1)
    taken.append((x, ty - th - base, x + tw + 4, ty + base))
    cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + base), (0, 0, 0), -1)
    cv2.putText(out, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, rgb, thick, cv2.LINE_AA)


def render_overlay(
    image: np.ndarray,
    defects: Iterable[Defect],
    recipe: Recipe | None = None,
    verdict: Verdict | None = None,
    view: str | None = None,
) -> np.ndarray:
    """Draw ``defects`` (those of ``view`` when given) on a copy of ``image``; RGB uint8 HxWx3."""
    out = as_rgb(image)
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 500))
    scale = max(0.35, max(h, w) / 1100)
    colours = {c.name: hex_rgb(c.colour) for c in recipe.classes} if recipe else {}
    if recipe:
        for z in recipe.zones:
            if view is not None and z.view not in (None, view):
                continue
            rgb = INSPECT_ZONE_RGB if z.kind == "inspect" else IGNORE_ZONE_RGB
            if z.rect is not None:
                x0, y0, x1, y1 = z.rect
                cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), rgb, 1, cv2.LINE_4)
            else:
                cv2.polylines(out, [np.array(z.polygon, np.int32)], True, rgb, 1)
    bar = 0
    if verdict is not None:
        passed = verdict.outcome is Outcome.PASS
        word, colour = {Outcome.PASS: ("PASS", PASS_RGB), Outcome.REVIEW: ("REVIEW", REVIEW_RGB)}.get(
            verdict.outcome, ("REJECT", REJECT_RGB))
        reason = verdict.reason.removeprefix("review: ")
        text = word + ("" if passed and verdict.reason == "no defect" else f": {reason}")
        text = text.replace("²", "2")  # Hershey fonts are ASCII only
        bar = int(max(14, 28 * scale))
        banner = out[:bar].astype(np.float32) * 0.25 + np.array(colour) * 0.75
        out[:bar] = banner.astype(np.uint8)
        # a narrow view gets smaller text, then a cut one, rather than a reason running off the edge
        fit = scale
        while fit > MIN_TEXT_SCALE and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fit, thick)[0][0] > w - 8:
            fit = max(MIN_TEXT_SCALE, fit * 0.9)
        while len(text) > 4 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fit, thick)[0][0] > w - 8:
            text = text[:-4] + "..."
        cv2.putText(out, text, (4, bar - max(3, bar // 4)), cv2.FONT_HERSHEY_SIMPLEX, fit, (255, 255, 255), thick, cv2.LINE_AA)
    shown = [d for d in defects if view is None or d.view == view]
    # masks first, all of them, so a label is never hidden under another defect's fill
    for d in shown:
        rgb = colours.get(d.class_name, UNKNOWN_RGB)
        if d.mask is not None and d.mask.shape == (h, w):
            m = d.mask.astype(bool)
            out[m] = (out[m] * (1 - MASK_ALPHA) + np.array(rgb) * MASK_ALPHA).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, rgb, thick)
    labels: list[tuple[int, int, int, int]] = []
    for d in shown:
        rgb = colours.get(d.class_name, UNKNOWN_RGB)
        x0, y0, x1, y1 = (int(v) for v in d.box)
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), rgb, 1)
        _label(out, f"{d.class_name} {d.confidence:.2f}", x0, y0, rgb, scale, thick, top=bar, taken=labels)
    return out
