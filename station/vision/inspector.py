"""The pipeline's contract with the vision stage: one Inspector per recipe.

``build_inspector(loaded, models_dir)`` loads every model the recipe needs once (a missing,
corrupt or mismatching model raises ModelError here, not on the first part) and returns an
object whose ``preprocess`` / ``find_defects`` / ``decide`` the pipeline calls per part, from
up to three analyse threads at once: nothing in it mutates shared state per call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from station.inspection import Defect, Inspection, Verdict, View
from station.pipeline import Findings
from station.recipe import LoadedRecipe, Recipe
from station.verdict import decide
from station.vision.overlay import render_overlay
from station.vision.preprocess import check_image, preprocess_views


class Analyzer(Protocol):
    def find(self, view: View) -> list[Defect]: ...


class Inspector:
    def __init__(self, recipe: Recipe, analyzer: Analyzer, model_hashes: dict[str, str] | None = None):
        self.recipe = recipe
        self.analyzer = analyzer
        self.model_hashes = dict(model_hashes or {})

    def preprocess(self, views: list[View]) -> list[View]:
        return preprocess_views(views, self.recipe.preprocess)

    def find_defects(self, views: list[View]) -> Findings:
        defects: list[Defect] = []
        for v in views:
            check_image(v.image, f"view {v.camera}")
            defects.extend(self.analyzer.find(v))
        scores = {"defects": float(len(defects))}
        if defects:
            scores["max_confidence"] = max(d.confidence for d in defects)
        overlay = render_overlay(views[0].image, defects, self.recipe, None, views[0].camera) if views else None
        return Findings(defects, scores, overlay)

    def decide(self, inspection: Inspection) -> Verdict:
        verdict = decide(inspection, self.recipe)
        if inspection.views:  # redraw with the verdict banner (the archive and the HMI show this one)
            first = inspection.views[0]
            inspection.overlay = render_overlay(first.image, inspection.defects, self.recipe, verdict, first.camera)
        if self.model_hashes:
            inspection.model_hashes.update(self.model_hashes)
        return verdict


def build_inspector(loaded: LoadedRecipe, models_dir: Path, backend: str = "onnxruntime", threads: int = 0) -> Inspector:
    """The recipe's inspector with its models loaded. Raises ModelError (models) or ValueError (recipe)."""
    recipe = loaded.recipe
    if recipe.vision.analyzer == "threshold":
        from station.vision.threshold import ThresholdAnalyzer

        return Inspector(recipe, ThresholdAnalyzer(recipe))
    from station.vision.sam_analyzer import load_sam_analyzer

    analyzer = load_sam_analyzer(recipe, Path(models_dir), backend, threads)
    return Inspector(recipe, analyzer, analyzer.model_hashes)
