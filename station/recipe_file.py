"""Writing recipe files: a validated Recipe into TOML text, keeping the comments and layout of
the file it changes (tomlkit), never with regular expressions.

``recipe_text(recipe, base)`` writes ``recipe`` over ``base`` (the current file's text, or None
for a new file): values that differ are replaced in place, keys whose value is now the
default are kept when the file had them and left out when it did not, keys gone from the
recipe (optional values now unset) are removed, and arrays of tables (classes, zones,
proposals) are updated item by item, so a comment on a class stays with it. The result is
checked to load back as exactly ``recipe``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tomlkit
from tomlkit.items import AoT, InlineTable, Table

from station.recipe import Recipe


def _plain(value):
    return value.unwrap() if hasattr(value, "unwrap") else value


def _merge(container, full: dict, explicit: dict) -> None:
    """Write ``full`` (every value) into ``container``; keys the container lacks are added only
    when they are in ``explicit`` (values a person would write: not the defaults)."""
    for key in list(container.keys()):
        if key not in full:
            del container[key]
    for key, value in full.items():
        have = container.get(key) if key in container else None
        if isinstance(value, dict):
            if isinstance(have, (Table, InlineTable)):
                _merge(have, value, explicit.get(key, {}))
            elif key in explicit:
                container[key] = explicit[key]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            wanted = explicit.get(key, value)
            if isinstance(have, AoT):
                for i, item in enumerate(value):
                    if i < len(have):
                        _merge(have[i], item, wanted[i] if i < len(wanted) else item)
                    else:
                        have.append(tomlkit.item(wanted[i] if i < len(wanted) else item))
                while len(have) > len(value):
                    del have[len(have) - 1]
            elif key in container or key in explicit:
                container[key] = tomlkit.aot()
                for item in wanted:
                    container[key].append(tomlkit.item(item))
        elif key in container:
            if _plain(have) != value:
                container[key] = value
        elif key in explicit:
            container[key] = value


def recipe_text(recipe: Recipe, base: str | None = None) -> str:
    """TOML text of ``recipe``, written over ``base`` (see the module doc). Raises ValueError if
    the text would not load back as ``recipe``."""
    full = recipe.model_dump(mode="json", by_alias=True, exclude_none=True)
    explicit = recipe.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    explicit = {"name": recipe.name, "version": recipe.version, **explicit}
    doc = tomlkit.parse(base) if base else tomlkit.document()
    _merge(doc, full, explicit)
    text = tomlkit.dumps(doc)
    again = Recipe.model_validate(tomlkit.parse(text).unwrap())
    if again != recipe:
        raise ValueError(f"recipe {recipe.name}: the written TOML does not load back as the same recipe")
    return text


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once (a reader sees the old file or the new one, never
    half of one), durable once this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
