"""The proposal stage: where on a view to look, and a first guess of what is there.

A per-pixel model (``role = "proposals"``) maps the filter-bank features of the grey view
(``station.vision.features``) to class probabilities [K+1, H, W] (0 = background). Regions
are hysteresis components of the defect probability ``1 - p(background)``: seeded above
``threshold`` and grown down to half of it. Coordinates are view px.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.inference.base import InferenceModel
from station.inference.metadata import ModelError
from station.vision.features import FEATURE_SET, pixel_features
from station.vision.regions import components

BACKGROUND = "background"
SMOOTH_SIGMA_PX = 1.0
MIN_REGION_PX = 4


@dataclass(frozen=True)
class Proposal:
    mask: np.ndarray  # bool HxW
    box: tuple[int, int, int, int]
    area_px: int
    score: float  # max defect probability in the region, 0..1
    class_probs: np.ndarray  # [K] mean class probabilities in the region, sums to 1


class ProposalStage:
    def __init__(self, model: InferenceModel, recipe_classes: list[str]):
        meta = model.metadata
        if meta.role != "proposals":
            raise ModelError(f"model {meta.name}: role {meta.role!r}, expected 'proposals'")
        if meta.extra.get("feature_set") != FEATURE_SET:
            raise ModelError(
                f"model {meta.name}: trained on features {meta.extra.get('feature_set')!r}, this station computes {FEATURE_SET!r}; retrain it"
            )
        if not meta.classes or meta.classes[0] != BACKGROUND or set(meta.classes[1:]) - set(recipe_classes):
            raise ModelError(
                f"model {meta.name}: classes {meta.classes} do not fit the recipe's {recipe_classes} (first must be {BACKGROUND!r})"
            )
        self.model = model
        self.classes = meta.classes[1:]

    def probabilities(self, grey: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """float32 [K+1, H, W] class probabilities for a uint8 HxW grey view (or its precomputed features)."""
        feats = pixel_features(grey) if features is None else features
        out = self.model.run({"features": feats[None].astype(np.float32)})
        return next(iter(out.values()))[0]

    def find(self, grey: np.ndarray, threshold: float, max_regions: int, roi: np.ndarray | None = None,
             features: np.ndarray | None = None) -> list[Proposal]:
        probs = self.probabilities(grey, features)
        p = cv2.GaussianBlur(1.0 - probs[0], (0, 0), SMOOTH_SIGMA_PX)
        if roi is not None:
            p = np.where(roi, p, 0.0)
        seeds = p > threshold
        if not seeds.any():
            return []
        out = []
        for region in components(p > threshold / 2, MIN_REGION_PX):
            if not (seeds & region.mask).any():
                continue
            cls = probs[1:, region.mask].mean(axis=1)
            out.append(Proposal(region.mask, region.box, region.area_px, float(p[region.mask].max()), cls / max(cls.sum(), 1e-6)))
        out.sort(key=lambda r: -r.score)
        return out[:max_regions]
