"""Recipes and inspections for tests that need a result without running the vision stage."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from station.benchmarks.recipes import threshold_recipe
from station.inspection import Inspection
from station.recipe import LoadedRecipe, load_recipe

REPO = Path(__file__).resolve().parents[1]



@lru_cache(maxsize=None)
def loaded_recipe(name: str = "demo-part", version: int = 1) -> LoadedRecipe:
    """The shipped recipe ``name`` (version 1), else a minimal one of that name and version."""
    shipped = REPO / "recipes" / f"{name}.toml"
    if shipped.is_file() and version == 1:
        return load_recipe(shipped)
    return threshold_recipe(name, ["scratch", "crack"], version=version)


def make_inspection(sequence: int, part_id: int | None = None, *, recipe: str | LoadedRecipe = "demo-part", version: int = 1,
                    triggered_at_s: float = 0.0, **fields) -> Inspection:
    loaded = recipe if isinstance(recipe, LoadedRecipe) else loaded_recipe(recipe, version)
    return Inspection(sequence, sequence if part_id is None else part_id, loaded, triggered_at_s, 0.0, **fields)
