"""A minimal recipe for code that needs one but whose vision is not what is measured (the PLC and
history benchmarks, stand-in inspectors in tests): one camera "top", the threshold analyzer
with one dark-blob rule, and the given defect classes."""

from __future__ import annotations

from pathlib import Path

from station.recipe import LoadedRecipe, load_recipe


def threshold_recipe_text(name: str, classes: dict[str, int] | list[str], *, plc_id: int = 1, budget_ms: int = 1000,
                          version: int = 1) -> str:
    """TOML text; ``classes`` names -> PLC codes, or names coded 1, 2, ... in order."""
    codes = classes if isinstance(classes, dict) else {c: i for i, c in enumerate(classes, 1)}
    first = next(iter(codes))
    text = (f'name = "{name}"\nversion = {version}\nplc_id = {plc_id}\ntime_budget_ms = {budget_ms}\n'
            f'[[cameras]]\nname = "top"\n'
            f'[vision]\nanalyzer = "threshold"\n[[vision.blobs]]\nclass = "{first}"\npolarity = "dark"\n')
    return text + "".join(f'[[classes]]\nname = "{c}"\nplc_code = {code}\n' for c, code in codes.items())


def threshold_recipe(name: str, classes: dict[str, int] | list[str], **kw) -> LoadedRecipe:
    return load_recipe(Path(f"{name}.toml"), text=threshold_recipe_text(name, classes, **kw))
