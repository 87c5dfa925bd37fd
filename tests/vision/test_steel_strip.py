"""The shipped steel-strip recipe, wired as a plant would run it: its committed head on the
backbone pulled from the wheel, outlines at the recipe's ``outline_at_peak``, on real NEU views of
each class. The views are among those the head was trained on: this checks the recipe and its
files work together, not accuracy (that is the record's held-out folds, models/trained/README.md)."""

from __future__ import annotations

import numpy as np

from station.inspection import Outcome, View
from station.models_store import ensure_recipe_models
from station.recipe import load_recipe
from station.stages import inspect_views
from station.vision.dataset import load_samples, read_manifest
from station.vision.inspector import build_inspector
from tests.conftest import REPO_ROOT


def test_shipped_steel_recipe_rejects_names_and_outlines_real_views(tmp_path, shared_dir):
    loaded = load_recipe(REPO_ROOT / "recipes" / "steel-strip.toml")
    assert loaded.recipe.vision.analyzer == "backbone" and loaded.recipe.vision.outline_at_peak == 0.96
    ensure_recipe_models(loaded.path, tmp_path)
    inspector = build_inspector(loaded, tmp_path)
    grown = build_inspector(load_recipe(loaded.path, loaded.text.replace("outline_at_peak = 0.96\n", "")), tmp_path)
    rows = read_manifest(shared_dir / "data" / "steel-strip-train" / "manifest.csv")
    picked = [r for c in ("inclusion", "patches", "scratches") for r in [r for r in rows if r.label == c][:2]]
    samples, skipped = load_samples(picked)
    assert not skipped and len(samples) == 6
    ious = {"outline": [], "region": []}
    for s in samples:
        view = [View(camera="top", image=s.image, source=str(s.row.image))]
        done = inspect_views(loaded, inspector, view, sequence=1, part_id=1)
        assert done.failure is None and done.verdict.outcome is Outcome.REJECT, (s.row.image, done.verdict)
        assert done.verdict.top_defect.class_name == s.row.label
        union = np.zeros(s.mask.shape, bool)
        for d in done.defects:
            union |= d.mask
        wide = np.zeros(s.mask.shape, bool)
        for d in inspect_views(loaded, grown, view, sequence=1, part_id=1).defects:
            wide |= d.mask
        assert (union & s.mask).any() and union.sum() < wide.sum()  # the outline at 96 % of each peak is tighter than the region
        ious["outline"].append((union & s.mask).sum() / (union | s.mask).sum())
        ious["region"].append((wide & s.mask).sum() / (wide | s.mask).sum())
    assert np.mean(ious["outline"]) > np.mean(ious["region"]), ious  # and fits the masks better
