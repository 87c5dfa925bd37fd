"""Recipe editing as the HMI does it: validate, save every change as a new version (author +
diff in the audit log), activate a version (write the recipe file, reload the recipe book, and
switch the running pipeline if that recipe is on the line).

The recipe file in the recipes directory is what the station and the PLC load by name or
``plc_id``; the database keeps every version ever saved.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import ValidationError

from station.hmi.store import HmiStore, RecipeVersion, StoreError, text_diff
from station.config_errors import ConfigError, validation_problems
from station.recipe import LoadedRecipe, Recipe, load_recipe
from station.recipe_file import recipe_text, write_atomically

MAX_RECIPE_BYTES = 256 * 1024


class RecipeRefused(ValueError):
    """The recipe cannot be saved or activated; ``problems`` are (field path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {r}" if k else r for k, r in problems))


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
        try:
            before = self.current_text(name)
        except StoreError:
            before = ""
        # written over the latest text, so its comments and layout stay (station.recipe_file)
        text = recipe_text(recipe, before or None)
        parse_text(text, f"{name}.toml")  # what we write must load exactly as the station will load it
        if before and _same_content(before, text):
            raise RecipeRefused([("", "nothing changed since the latest version")])
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.store.record_recipe_version(name, recipe.version, text, digest, author,
                                                text_diff(before, text, name))

    def activate(self, name: str, version: int, actor: str, changes: list[str] | None = None) -> LoadedRecipe:
        """Make a stored version the recipe file; switch the line to it if it runs this recipe
        (station.recipe_switch, the station's one path). On any failure the previous file is
        restored and the running recipe stays. Audited, with ``changes`` (what the person was
        shown before confirming) when given."""
        stored = self.store.recipe_version(name, version)
        if stored is None:
            raise StoreError(f"no stored version {version} of {name!r}")
        loaded = load_recipe(self.directory / f"{name}.toml", text=stored.content)
        path = self.directory / f"{name}.toml"
        old_text = path.read_text(encoding="utf-8") if path.exists() else None
        old_version = self.on_disk(name).recipe.version if self.on_disk(name) else None
        write_atomically(path, stored.content)
        running = self.running()
        try:
            self.station.recipes.reload()
            if name not in self.station.recipes.recipes:
                errors = "; ".join(str(e) for e in self.station.recipes.errors) or "not loaded"
                raise RecipeRefused([("", f"the recipe book refused the file: {errors}")])
            loaded = self.station.recipes.get(name)
            if running is not None and running.recipe.name == name:
                loaded = self.station.switch_recipe(name, actor=actor, via="HMI activate")
        except Exception:
            if old_text is None:
                path.unlink(missing_ok=True)
            else:
                write_atomically(path, old_text)
            self.station.recipes.reload()
            raise
        self.store.audit(actor, "recipe.activate", name, before=f"v{old_version}" if old_version else None,
                         after=f"v{version}" + ("\n" + "\n".join(changes) if changes else ""))
        return loaded

    def run_on_line(self, name: str, actor: str) -> LoadedRecipe:
        """Switch the line to recipe ``name`` (the station's one path, as the PLC's recipe select)."""
        return self.station.switch_recipe(name, actor=actor, via="HMI")


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
