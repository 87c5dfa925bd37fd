"""Switching the line to another recipe: the one path for the station's start, the PLC's
LOAD_RECIPE and the HMI.

The recipe book is read again (a file may have been added or activated since), the recipe is
found by name or PLC ID, its inspector is built (models loaded and checked) and the pipeline
switches between parts. On any failure the running recipe stays, the failure is an alarm and
an exception saying why (``RecipeUnknown``, ``RecipeLoadFailed``); a success clears that alarm.
Every attempt is audited: who (a user, "plc", "station"), through what, from which recipe
version to which, and whether it failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from station.alarms import AlarmBoard, Severity
from station.recipe import LoadedRecipe, RecipeBook

log = logging.getLogger("station.recipes")

ALARM_SWITCH = "recipe_switch_failed"

# (actor, action, target, before, after); e.g. station.db.audit.AuditLog.record
AuditFn = Callable[..., None]


class RecipeSwitchError(Exception):
    """The line could not switch; the running recipe stays."""


class RecipeUnknown(RecipeSwitchError):
    """No recipe of that name or PLC ID in the recipes directory."""


class RecipeLoadFailed(RecipeSwitchError):
    """The recipe exists but cannot run here (a model missing or corrupt, a camera not configured)."""


def _label(loaded: LoadedRecipe | None) -> str | None:
    return None if loaded is None else f"{loaded.recipe.name} v{loaded.recipe.version}"


class RecipeSwitcher:
    def __init__(self, recipes: RecipeBook, pipeline, alarms: AlarmBoard, audit: AuditFn | None = None):
        self.recipes = recipes
        self.pipeline = pipeline
        self.alarms = alarms
        self.audit = audit
        self._lock = threading.Lock()  # one switch at a time (PLC and HMI may ask together)

    def switch(self, *, name: str | None = None, plc_id: int | None = None, actor: str, via: str) -> LoadedRecipe:
        """Make recipe ``name`` (or the one with ``plc_id``) the running recipe for parts triggered
        from now on. Raises RecipeUnknown or RecipeLoadFailed (the running recipe stays)."""
        if (name is None) == (plc_id is None):
            raise ValueError("give a recipe name or a PLC ID")
        wanted = name if name is not None else f"plc_id {plc_id}"
        with self._lock:
            active = self.pipeline.recipe
            before = _label(active.loaded if active is not None else None)
            self.recipes.reload()
            try:
                loaded = self.recipes.get(name) if name is not None else self.recipes.by_plc_id(plc_id)
            except KeyError as exc:
                problems = "; ".join(str(e) for e in self.recipes.errors)
                message = exc.args[0] + (f" ({problems})" if problems else "")
                self._failed(actor, via, wanted, before, message)
                raise RecipeUnknown(message) from None
            try:
                self.pipeline.load_recipe(loaded)
            except Exception as exc:
                message = f"recipe {_label(loaded)} cannot be loaded: {exc}"
                self._failed(actor, via, wanted, before, message)
                raise RecipeLoadFailed(message) from exc
        if self.alarms.is_active(ALARM_SWITCH):
            self.alarms.clear(ALARM_SWITCH)
        log.info("recipe %s active (%s via %s; was %s)", _label(loaded), actor, via, before or "none")
        self._audit(actor, f"recipe.switch ({via})", loaded.recipe.name, before, _label(loaded))
        return loaded

    def _failed(self, actor: str, via: str, wanted: str, before: str | None, message: str) -> None:
        log.error("recipe switch to %s (%s via %s) failed: %s", wanted, actor, via, message)
        self.alarms.raise_(ALARM_SWITCH, "recipes",
                           f"{via}: {message}; still running {before or 'no recipe'}", Severity.WARNING)
        self._audit(actor, f"recipe.switch_failed ({via})", wanted, before, message[:500])

    def _audit(self, actor: str, action: str, target: str, before: str | None, after: str | None) -> None:
        if self.audit is None:
            return
        try:
            self.audit(actor, action, target, before, after)
        except Exception:  # the audit must not undo a switch the line already made
            log.exception("recipe switch not audited")
