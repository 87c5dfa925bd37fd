"""What several subcommands share: finding a recipe by name or path."""

from __future__ import annotations

from pathlib import Path

from station.paths import SHIPPED_RECIPES
from station.recipe import LoadedRecipe, load_recipe


def recipes_dir(arg: Path | None) -> Path:
    """``--recipes-dir``, else ./recipes when there is one, else the shipped recipes."""
    if arg is not None:
        return arg
    return Path("recipes") if Path("recipes").is_dir() else SHIPPED_RECIPES


def resolve_recipe(name: str, recipes_dir_arg: Path | None = None) -> LoadedRecipe:
    """A recipe by name (in the recipes directory) or by the path of its file. Raises ConfigError."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return load_recipe(path)
    return load_recipe(recipes_dir(recipes_dir_arg) / f"{name}.toml")
