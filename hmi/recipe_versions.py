"""Recipe editing as the HMI does it: validate, save every change as a new version (author +
diff in the audit log), activate a version (write the recipe file, reload the recipe book, and
switch the running pipeline if that recipe is on the line).

The recipe file in the recipes directory is what the station and the PLC load by name or
``plc_id``; the database keeps every version ever saved.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import tomli_w
from pydantic import ValidationError

from station.hmi.store import HmiStore, RecipeVersion, StoreError, text_diff
from station.config_errors import ConfigError, validation_problems
from station.recipe import LoadedRecipe, Recipe, load_recipe

MAX_RECIPE_BYTES = 256 * 1024


class RecipeRefused(ValueError):
    """The recipe cannot be saved or activated; ``problems`` are (field path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {r}" if k else r for k, r in problems))


def recipe_toml(recipe: Recipe) -> str:
    """TOML text of a recipe: only what differs from the defaults, as a person would write it."""
    data = recipe.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    data = {"name": recipe.name, "version": recipe.version, **data}
    return tomli_w.dumps(data)


def validate(data: dict) -> Recipe:
    """Raise RecipeRefused with field paths for anything the recipe schema rejects."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeRefused(validation_problems(exc)) from None


def parse_text(text: str, filename: str = "upload.toml") -> Recipe:
    if len(text.encode("utf-8")) > MAX_RECIPE_BYTES:
        raise RecipeRefused([("", f"file too large: at most {MAX_RECIPE_BYTES // 1024} KiB")])
    try:
        return load_recipe(Path(filename), text=text).recipe
    except ConfigError as exc:
        raise RecipeRefused(exc.problems) from None


class RecipeEditor:
    def __init__(self, station, store: HmiStore):
        self.station = station
        self.store = store

    @property
    def directory(self) -> Path:
        return Path(self.station.recipes.directory)

    def names(self) -> list[str]:
        names = set(self.station.recipes.recipes)
        with self.store.session() as s:
            from sqlalchemy import select

            from station.db.models import RecipeVersionRow

            names |= set(s.scalars(select(RecipeVersionRow.name).distinct()))
        return sorted(names)

    def on_disk(self, name: str) -> LoadedRecipe | None:
        return self.station.recipes.recipes.get(name)

    def running(self) -> LoadedRecipe | None:
        active = self.station.pipeline.recipe
        return active.loaded if active else None

    def current_text(self, name: str) -> str:
        """The latest stored version's text, else the file's."""
        versions = self.store.recipe_versions(name)
        if versions:
            return versions[0].content
        loaded = self.on_disk(name)
        if loaded is None:
            raise StoreError(f"no recipe {name!r}")
        return loaded.text

    def save(self, data: dict, author: str) -> RecipeVersion:
        """Validate ``data`` (the form's dict), store it as the next version of its recipe."""
        recipe = validate(data)
        name = recipe.name
        disk = self.on_disk(name)
        latest = max(self.store.latest_recipe_version(name), disk.recipe.version if disk else 0)
        recipe = recipe.model_copy(update={"version": latest + 1})
        text = recipe_toml(recipe)
        parse_text(text, f"{name}.toml")  # what we write must load exactly as the station will load it
        try:
            before = self.current_text(name)
        except StoreError:
            before = ""
        if before and _same_content(before, text):
            raise RecipeRefused([("", "nothing changed since the latest version")])
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.store.record_recipe_version(name, recipe.version, text, digest, author,
                                                text_diff(before, text, name))

    def activate(self, name: str, version: int, actor: str) -> LoadedRecipe:
        """Make a stored version the recipe file; reload; switch the line if it runs this recipe.

        On any failure the previous file is restored and the running recipe stays.
        """
        stored = self.store.recipe_version(name, version)
        if stored is None:
            raise StoreError(f"no stored version {version} of {name!r}")
        loaded = load_recipe(self.directory / f"{name}.toml", text=stored.content)
        path = self.directory / f"{name}.toml"
        old_text = path.read_text(encoding="utf-8") if path.exists() else None
        old_version = self.on_disk(name).recipe.version if self.on_disk(name) else None
        _atomic_write(path, stored.content)
        running = self.running()
        try:
            self.station.recipes.reload()
            if name not in self.station.recipes.recipes:
                errors = "; ".join(str(e) for e in self.station.recipes.errors) or "not loaded"
                raise RecipeRefused([("", f"the recipe book refused the file: {errors}")])
            loaded = self.station.recipes.get(name)
            if running is not None and running.recipe.name == name:
                self.station.pipeline.load_recipe(loaded)
        except Exception:
            if old_text is None:
                path.unlink(missing_ok=True)
            else:
                _atomic_write(path, old_text)
            self.station.recipes.reload()
            raise
        self.store.audit(actor, "recipe.activate", name, before=f"v{old_version}" if old_version else None,
                         after=f"v{version}")
        return loaded

    def run_on_line(self, name: str, actor: str) -> LoadedRecipe:
        """Switch the pipeline to recipe ``name`` (as the PLC's recipe select does)."""
        before = self.running()
        self.station.recipes.reload()
        loaded = self.station.recipes.get(name)
        self.station.pipeline.load_recipe(loaded)
        self.store.audit(actor, "recipe.run", name,
                         before=f"{before.recipe.name} v{before.recipe.version}" if before else None,
                         after=f"{name} v{loaded.recipe.version}")
        return loaded


def _same_content(a: str, b: str) -> bool:
    """Equal apart from the version number."""
    import tomllib

    try:
        da, db_ = tomllib.loads(a), tomllib.loads(b)
    except tomllib.TOMLDecodeError:
        return False
    da.pop("version", None)
    db_.pop("version", None)
    return Recipe.model_validate({**da, "version": 1}) == Recipe.model_validate({**db_, "version": 1}) \
        if _valid(da) and _valid(db_) else da == db_


def _valid(d: dict) -> bool:
    try:
        Recipe.model_validate({**d, "version": 1})
        return True
    except ValidationError:
        return False


def _atomic_write(path: Path, text: str) -> None:
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
