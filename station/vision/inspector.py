"""The pipeline's contract with the vision stage: one Inspector per recipe.

``build_inspector(loaded, models_dir)`` loads every model the recipe needs once (a missing,
corrupt or mismatching model raises ModelError here, not on the first part) and returns an
object whose ``preprocess`` / ``find_defects`` / ``decide`` the stages (station.stages) call
per part, from several analyse threads at once: nothing in it changes per call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from station.images import check_image
from station.inspection import Defect, Verdict, View
from station.recipe import LoadedRecipe, ThresholdVision
from station.stages import Findings
from station.verdict import decide, locate_all
from station.vision.preprocess import preprocess_views


class Analyzer(Protocol):
    def find(self, view: View) -> list[Defect]: ...


class Inspector:
    def __init__(self, loaded: LoadedRecipe, analyzer: Analyzer, model_hashes: dict[str, str] | None = None):
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.analyzer = analyzer
        self.model_hashes = dict(model_hashes or {})

    def preprocess(self, views: list[View]) -> list[View]:
        return preprocess_views(views, self.recipe.preprocess)

    def find_defects(self, views: list[View]) -> Findings:
        """Every view's defects, located (zone, area inside the inspected region, mm²)."""
        defects: list[Defect] = []
        for v in views:
            check_image(v.image, f"view {v.camera}")
            defects.extend(self.analyzer.find(v))
        defects = locate_all(defects, self.recipe, {v.camera: v.image.shape[:2] for v in views})
        scores = {"defects": float(len(defects))}
        if defects:
            scores["max_confidence"] = max(d.confidence for d in defects)
        return Findings(defects, scores)

    def decide(self, defects: list[Defect]) -> Verdict:
        return decide(defects, self.recipe)


def build_inspector(loaded: LoadedRecipe, models_dir: Path, backend: str = "onnxruntime", threads: int = 0) -> Inspector:
    """The recipe's inspector with its models loaded. Raises ModelError (models) or ValueError (recipe)."""
    recipe = loaded.recipe
    if isinstance(recipe.vision, ThresholdVision):
        from station.vision.threshold import ThresholdAnalyzer

        return Inspector(loaded, ThresholdAnalyzer(recipe))
    from station.vision.sam_analyzer import load_sam_analyzer

    analyzer = load_sam_analyzer(recipe, Path(models_dir), backend, threads)
    return Inspector(loaded, analyzer, analyzer.model_hashes)
