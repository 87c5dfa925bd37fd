"""What activating a recipe version changes, as the HMI's confirmation lists it
(station.recipe_validation.recipe_changes), and the side-by-side rows of a validation."""

from __future__ import annotations

from station.recipe import load_recipe
from station.recipe_validation import confusion, recipe_changes, table_rows
from tests.recipes import REPO


def test_changes_name_models_thresholds_and_classes():
    old = load_recipe(REPO / "recipes" / "magnetic-tile-nets.toml").recipe
    vision = old.vision.model_copy(update={"classifier": "magnetic-tile-v2-classifier",
                                           "proposals": [old.vision.proposals[0].model_copy(update={"model": "mt-v2-mlp"})]})
    classes = [c.model_copy(update={"min_area_px": 9}) if c.name == "crack" else c for c in old.classes]
    new = old.model_copy(update={"version": 2, "vision": vision, "review_at": 0.9, "classes": classes})
    lines = recipe_changes(old, new)
    assert lines[0] == "version 1 -> 2"
    assert "vision.classifier: magnetic-tile-classifier -> magnetic-tile-v2-classifier" in lines
    assert ("proposal models: magnetic-tile-proposals-pixel-mlp, magnetic-tile-proposals-sam-head, "
            "magnetic-tile-proposals-sam-context-head -> mt-v2-mlp") in lines
    assert "review_at: None -> 0.9" in lines and "class crack: min_area_px 6 -> 9" in lines
    assert recipe_changes(old, old.model_copy(update={"version": 3})) == ["version 1 -> 3", "nothing else (the same rules and models)"]
    assert recipe_changes(None, new) == ["magnetic-tile-nets v2 becomes the recipe (there is none now)"]


def test_confusion_and_table_rows():
    from dataclasses import replace

    from tests.vision.test_eval import _result

    results = [replace(_result("free", 0.9, "g1"), rejected=False, reviewed=True), replace(_result("free", 0.1, "g2"), rejected=False),
               _result("crack", 0.99, "d1", "crack"), replace(_result("crack", 0.99, "d2", "blowhole"), top_class="blowhole")]
    assert confusion(results, "free") == {"free": {"review": 1, "pass": 1}, "crack": {"crack": 1, "blowhole": 1}}
    metrics = {"version": 2, "part_escape_rate": 0.25, "latency_ms": {"total": {"p50": 12.4, "p99": 30.0}}}
    rows = dict((what, (a, c)) for what, a, c in table_rows({"candidate": metrics, "active": {**metrics, "version": 1,
                                                                                             "part_escape_rate": None}}))
    assert rows["escape (parts)"] == ("n/a", "25.0 %") and rows["latency total p50 / p99"] == ("12 / 30 ms", "12 / 30 ms")
