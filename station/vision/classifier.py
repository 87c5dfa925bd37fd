"""The region classifier: names each proposed region, or calls it "not a defect".

A small CNN (``role = "classifier"``) on crops around the region (``station.vision.crops``):
in ``crops`` [N, 2, S, S], out ``probs`` [N, K+1]: the recipe's defect classes in the order
of the model's metadata, then ``not_defect``.
"""

from __future__ import annotations

import numpy as np

from station.inference.base import InferenceModel
from station.inference.metadata import ModelError
from station.vision.crops import region_crop

NOT_DEFECT = "not_defect"


class RegionClassifier:
    def __init__(self, model: InferenceModel, recipe_classes: list[str]):
        meta = model.metadata
        if meta.role != "classifier":
            raise ModelError(f"model {meta.name}: role {meta.role!r}, expected 'classifier'")
        if not meta.classes or meta.classes[-1] != NOT_DEFECT or set(meta.classes[:-1]) - set(recipe_classes):
            raise ModelError(
                f"model {meta.name}: classes {meta.classes} do not fit the recipe's {recipe_classes} (last must be {NOT_DEFECT!r})"
            )
        if meta.input is None:
            raise ModelError(f"model {meta.name}: metadata has no input size")
        self.model = model
        self.classes = meta.classes[:-1]
        self.size = meta.input.size
        self.context = float(meta.extra.get("crop_context", 0.5))

    def classify(self, grey: np.ndarray, regions: list[tuple[np.ndarray, tuple[int, int, int, int]]]) -> np.ndarray:
        """[N, K+1] probabilities for (mask, box) regions of a uint8 grey view."""
        if not regions:
            return np.zeros((0, len(self.classes) + 1), np.float32)
        crops = np.stack([region_crop(grey, m, b, self.size, self.context) for m, b in regions]).astype(np.float32)
        return next(iter(self.model.run({"crops": crops}).values()))
