"""The classical analyzer: dark and bright blobs under fixed grey thresholds, no model.

Used by the simulated demo part and by fast tests. Each recipe class says which blobs it is
(``polarity`` dark/bright, ``shape`` line/blob/any); a blob is named by the first class
whose polarity matches and whose shape fits (lines: circularity < LINE_CIRCULARITY).
Confidence says how far past the threshold the blob goes: 0.5 just across, 1.0 at
``FULL_CONFIDENCE_DEPTH`` grey levels beyond it.
"""

from __future__ import annotations

import numpy as np

from station.inspection import Defect, View
from station.recipe import DefectClass, Recipe
from station.vision.preprocess import to_gray
from station.vision.regions import components, roi_mask

LINE_CIRCULARITY = 0.3
FULL_CONFIDENCE_DEPTH = 64.0  # grey levels
MIN_BLOB_PX = 3  # single noisy pixels are not defects


class ThresholdAnalyzer:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.by_polarity: dict[str, list[DefectClass]] = {
            p: [c for c in recipe.classes if c.polarity == p] for p in ("dark", "bright")
        }
        if not any(self.by_polarity.values()):
            raise ValueError(
                f"recipe {recipe.name}: the threshold analyzer needs classes with polarity = \"dark\" or \"bright\""
            )

    def _name(self, polarity: str, is_line: bool) -> DefectClass | None:
        wanted = "line" if is_line else "blob"
        candidates = self.by_polarity[polarity]
        for c in candidates:
            if c.shape == wanted:
                return c
        for c in candidates:
            if c.shape == "any":
                return c
        return None

    def find(self, view: View) -> list[Defect]:
        """Defects on one view, strongest first, at most ``vision.max_proposals``."""
        vision = self.recipe.vision
        gray = to_gray(view.image)
        roi = roi_mask(self.recipe.zones, view.camera, gray.shape)
        found: list[Defect] = []
        for polarity in ("dark", "bright"):
            if not self.by_polarity[polarity]:
                continue
            if polarity == "dark":
                mask, depth_of = (gray < vision.dark_threshold) & roi, lambda px: vision.dark_threshold - float(px.min())
            else:
                mask, depth_of = (gray > vision.bright_threshold) & roi, lambda px: float(px.max()) - vision.bright_threshold
            for region in components(mask, MIN_BLOB_PX):
                cls = self._name(polarity, region.circularity < LINE_CIRCULARITY)
                if cls is None:
                    continue
                depth = depth_of(gray[region.mask])
                conf = float(np.clip(0.5 + 0.5 * depth / FULL_CONFIDENCE_DEPTH, 0.0, 1.0))
                found.append(Defect(view.camera, cls.name, conf, region.box, region.area_px, region.mask, proposal_score=conf))
        found.sort(key=lambda d: (-d.confidence, -d.area_px))
        return found[: vision.max_proposals]
