"""The classical analyzer: dark and bright blobs under fixed grey thresholds, no model.

Used by fast tests and recipes that want no model. The recipe's ``vision.blobs`` say which
blobs are which class (``polarity`` dark/bright, ``shape`` line/blob/any); a blob is named by
the first rule whose polarity matches and whose shape fits (lines: circularity <
LINE_CIRCULARITY).
Confidence says how far past the threshold the blob goes: 0.5 just across, 1.0 at
``FULL_CONFIDENCE_DEPTH`` grey levels beyond it.
"""

from __future__ import annotations

import numpy as np

from station.inspection import Defect, View
from station.recipe import BlobRule, Recipe, ThresholdVision
from station.vision.preprocess import to_gray
from station.vision.regions import components, roi_mask

LINE_CIRCULARITY = 0.3
FULL_CONFIDENCE_DEPTH = 64.0  # grey levels
MIN_BLOB_PX = 3  # single noisy pixels are not defects


class ThresholdAnalyzer:
    def __init__(self, recipe: Recipe):
        if not isinstance(recipe.vision, ThresholdVision):
            raise ValueError(f"recipe {recipe.name}: not a threshold recipe (vision.analyzer = {recipe.vision.analyzer!r})")
        self.recipe = recipe
        self.vision = recipe.vision
        self.by_polarity: dict[str, list[BlobRule]] = {
            p: [b for b in self.vision.blobs if b.polarity == p] for p in ("dark", "bright")
        }

    def _name(self, polarity: str, is_line: bool) -> BlobRule | None:
        wanted = "line" if is_line else "blob"
        candidates = self.by_polarity[polarity]
        for b in candidates:
            if b.shape == wanted:
                return b
        for b in candidates:
            if b.shape == "any":
                return b
        return None

    def find(self, view: View) -> list[Defect]:
        """Defects on one view, strongest first, at most ``vision.max_proposals``."""
        vision = self.vision
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
                rule = self._name(polarity, region.circularity < LINE_CIRCULARITY)
                if rule is None:
                    continue
                depth = depth_of(gray[region.mask])
                conf = float(np.clip(0.5 + 0.5 * depth / FULL_CONFIDENCE_DEPTH, 0.0, 1.0))
                found.append(Defect(view.camera, rule.class_name, conf, region.box, region.area_px, region.mask, proposal_score=conf))
        found.sort(key=lambda d: (-d.confidence, -d.area_px))
        return found[: vision.max_proposals]
