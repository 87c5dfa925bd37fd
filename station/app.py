"""The Station: composes cameras, pipeline, PLC link, history writer and HMI from StationConfig.

This is the one place where the result sinks are wired: the history writer first (its
``publish`` writes the verdict to the journal, so no verdict reaches the PLC without a record
that survives a crash of this process), then the PLC (its answer is the line's), then the HMI's
state, then any extra sinks the caller gives (the headless demo's recorder). The history is also
the pipeline's record keeper: with ``on_history_full = "stop"`` it refuses parts it could not
record. Recipes are switched through one path (``switch_recipe``,
station.recipe_switch) for start-up, the PLC and the HMI.

Start-up order: recipes → cameras (each failure an alarm; no camera at all is fatal) →
history writer (then the operator's shift counters are seeded from the history) → active recipe
and its models (failure is fatal: nothing could be inspected) → pipeline → PLC. Shutdown runs
the other way, after parts in flight are published.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from station.alarms import AlarmBoard, Severity
from station.camera import Camera, make_camera
from station.config import StationConfig
from station.counters import PartCounters
from station.inference import pool as npu_pool
from station.inference.select import analyse_workers, resolve_backend
from station.online import OnlineSwitch
from station.pipeline import Pipeline, ResultSink
from station.recipe import LoadedRecipe, RecipeBook
from station.recipe_switch import RecipeSwitcher, RecipeSwitchError, RecipeUnknown
from station.stats import StationStats

log = logging.getLogger("station.app")


COUNTER_STATE_FILE = "counters.json"  # in the var dir: the time of the last counter reset
ONLINE_STATE_FILE = "online.json"  # in the var dir: an operator's "offline" (station.online)
ALARM_COUNTERS = "counters_seed"
ALARM_BUDGET = "time_budget"
WARM_UP_PARTS = 3


def result_sinks(history, plc, hmi, extras=()) -> tuple:
    """The order every verdict takes: its durable record (history: journal, then database),
    the PLC, the HMI, extras. Absent ones (None) are left out. Also used by `station plc bench`."""
    return tuple(s for s in (history, plc, hmi) if s is not None) + tuple(extras)


class StartupError(Exception):
    """The station cannot run; the message says why (exit status 1)."""


class ActiveRecipeUnknown(StartupError):
    """The station file's ``active_recipe`` names no recipe in the recipes directory."""


def build_inspector(loaded: LoadedRecipe, *, models_dir: Path, backend: str, threads: int):
    from station.vision.inspector import build_inspector as build

    return build(loaded, models_dir, backend=backend, threads=threads)


class Station:
    def __init__(self, config: StationConfig, *, plc: bool | None = None, history: bool = True, hmi: bool | None = None,
                 sinks: list[ResultSink] | tuple[ResultSink, ...] = ()):
        self.config = config
        self.alarms = AlarmBoard()
        # the var dir (the archive's parent) is the station's own writable place, as for the HMI's sessions
        self.stats = StationStats(shift=PartCounters(Path(config.archive.dir).parent / COUNTER_STATE_FILE,
                                                     plan=config.shifts.plan()))
        self.recipes = RecipeBook(config.recipes_dir)
        for err in self.recipes.errors:
            self.alarms.raise_(f"recipe_invalid:{Path(err.path).name}", "recipes", str(err))
        self.cameras: dict[str, Camera] = {
            c.name: make_camera(c, self.alarms, config.pipeline.max_image_pixels) for c in config.cameras
        }
        choice = resolve_backend(config.inference.backend, config.inference.npu_cores)
        self.backend, self.backend_reason = choice.backend, choice.reason
        if self.backend != "onnxruntime":
            # a core that fails is taken out of its pool; the operator must hear about it
            npu_pool.on_degraded(
                lambda model, message: self.alarms.raise_(f"npu_degraded:{model}", "npu", message, Severity.WARNING)
            )
        self.pipeline = Pipeline(
            self.cameras,
            partial(build_inspector, models_dir=config.models_dir, backend=self.backend, threads=config.inference.threads),
            self.alarms,
            queue_depth=config.pipeline.queue_depth,
            # with N NPU cores, N + 1 analyse threads keep every core busy (station bench)
            inference_workers=analyse_workers(self.backend, config.pipeline.inference_workers),
            stats=self.stats,
            online=OnlineSwitch(Path(config.archive.dir).parent / ONLINE_STATE_FILE),
        )
        self._want_plc = config.plc.enabled if plc is None else plc
        self._want_history = history
        self._extra_sinks = tuple(sinks)
        self.plc = None
        self.history = None
        self.audit_log = None
        self.hmi_state = None
        if config.hmi.enabled if hmi is None else hmi:
            from station.hmi.state import HmiState

            self.hmi_state = HmiState(self)
        self.switcher = RecipeSwitcher(self.recipes, self.pipeline, self.alarms, self._audit)
        self.measured_part_ms: float | None = None  # one part's time at start (measure_recipe)
        self.started = False

    @property
    def backend_label(self) -> str:
        return f"{self.backend} ({self.backend_reason})"

    def start(self) -> None:
        """Start everything or nothing: on StartupError whatever had started is stopped again."""
        try:
            self._start()
        except StartupError:
            self.stop()
            raise

    def _start(self) -> None:
        opened = 0
        for name, cam in self.cameras.items():
            try:
                cam.open()
                opened += 1
            except Exception as exc:
                log.error("camera %s failed to open: %s", name, exc)
                self.alarms.raise_(f"camera_lost:{name}", "camera", f"camera {name} failed to open: {exc}")
        if opened == 0:
            raise StartupError("no configured camera could be opened: " + "; ".join(a.message for a in self.alarms.active()))
        try:
            if self._want_history:
                from station.db.audit import AuditLog
                from station.db.writer import HistoryWriter

                self.history = HistoryWriter(self.config.database, self.config.archive, self.alarms, self.config.station_id)
                self.history.start()
                self.audit_log = AuditLog(self.history.engine)
                self._seed_counters()  # before the first part: nothing is counted twice
        except Exception as exc:
            log.exception("start-up failed")
            raise StartupError(f"{type(exc).__name__}: {exc}") from None
        try:
            self.switch_recipe(self.config.active_recipe, actor="station", via="start-up")
        except RecipeUnknown as exc:
            raise ActiveRecipeUnknown(str(exc)) from None
        except RecipeSwitchError as exc:
            raise StartupError(str(exc)) from None
        log.info("inference backend: %s", self.backend_label)
        self.measure_recipe()
        try:
            if self._want_plc:
                from station.plc.service import PlcService

                self.plc = PlcService(self.config.plc, self.pipeline, self.switcher, self.alarms, self.stats)
            self.connect_sinks()
            if self.hmi_state is not None:
                self.hmi_state.start()
            self.pipeline.start()
            if self.plc is not None:
                self.plc.start()
        except Exception as exc:
            log.exception("start-up failed")
            raise StartupError(f"{type(exc).__name__}: {exc}") from None
        self.started = True

    def measure_recipe(self) -> float | None:
        """Warm the running recipe's models up on the cameras' sample frames and compare the time
        one part takes (median of a few, ms) with the recipe's time budget: a budget the median
        exceeds would make most parts timeout rejects, so it is an alarm from the start. None
        when a camera gives no sample frame (hardware cameras are measured by `station bench`)."""
        from station.stages import inspect_views

        active = self.pipeline.recipe
        views = [self.cameras[c.name].sample_view() for c in active.loaded.recipe.cameras]
        if any(v is None for v in views):
            self.measured_part_ms = None
            return None
        took = sorted(inspect_views(active.loaded, active.inspector, views).total_ms for _ in range(WARM_UP_PARTS))
        self.measured_part_ms = took[len(took) // 2]
        budget = active.loaded.recipe.time_budget_ms
        if self.measured_part_ms > budget:
            message = (f"recipe {active.loaded.recipe.name}: one part takes {self.measured_part_ms:.0f} ms on this machine "
                       f"({self.backend}), over its time budget of {budget} ms: most parts would be timeout rejects")
            log.warning(message)
            self.alarms.raise_(ALARM_BUDGET, "recipes", message, Severity.WARNING)
        else:
            log.info("recipe %s: one part takes %.0f ms (budget %d ms)", active.loaded.recipe.name, self.measured_part_ms, budget)
        return self.measured_part_ms

    def connect_sinks(self) -> None:
        """The pipeline's result sinks, in the order they hear of a part (``result_sinks``)."""
        self.pipeline.sinks = result_sinks(self.history, self.plc, self.hmi_state, self._extra_sinks)
        self.pipeline.record_keeper = self.history

    def _audit(self, actor: str, action: str, target: str, before: str | None, after: str | None) -> None:
        if self.audit_log is not None:
            self.audit_log.record(actor, action, target, before, after)

    def _seed_counters(self) -> None:
        """The operator's counters after a restart: this station's verdicts of the current period
        are in the history. If it cannot be read the counters start from zero, with a warning."""
        from station.db.queries import HistoryQueries

        counters = self.stats.shift
        since = counters.period_start()
        try:
            groups = HistoryQueries(self.history.engine).verdict_counts(self.config.station_id, since)
        except Exception as exc:
            log.warning("part counters start from zero: %s", exc)
            first_line = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            self.alarms.raise_(ALARM_COUNTERS, "database",
                               f"part counters start from zero: the history could not be read ({first_line})", Severity.WARNING)
            return
        counters.seed(since, groups)

    def switch_recipe(self, name: str, *, actor: str, via: str) -> LoadedRecipe:
        """Switch the line to recipe ``name`` between parts (station.recipe_switch). Raises
        RecipeUnknown / RecipeLoadFailed; the running recipe stays."""
        return self.switcher.switch(name=name, actor=actor, via=via)

    def stop(self) -> None:
        """Stop in reverse order; safe after a partial start."""
        if self.plc is not None:
            self.plc.stop()
            self.plc = None
        self.pipeline.stop()
        if self.hmi_state is not None:
            self.hmi_state.stop()
        if self.history is not None:
            self.history.close()
            self.history = None
        for cam in self.cameras.values():
            try:
                cam.close()
            except Exception:
                log.exception("camera %s failed to close", cam.name)
        self.started = False

    def __enter__(self) -> "Station":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
