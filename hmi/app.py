"""Serve the HMI in the station process.

``mount(station)`` builds the HMI's state (a pipeline result sink), connects to the history
database and registers the pages and image routes on NiceGUI's app; ``run(station, config)``
mounts and then serves (blocking, like ``ui.run``). The station object is duck-typed: it needs
``config``, ``alarms``, ``stats``, ``pipeline``, ``recipes``, ``cameras`` and may have ``plc``,
``history`` and ``backend_label``.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from nicegui import app, ui

from station.db.localtime import station_zone
from station.hmi.auth import Authenticator, LoginThrottle
from station.hmi.state import HmiState
from station.hmi.store import HmiStore, ensure_schema
from station.config import HmiConfig

log = logging.getLogger("hmi.app")


@dataclass
class HmiContext:
    """What every page needs: the station, the observed state, the HMI's database records."""

    station: object
    config: HmiConfig
    state: HmiState
    store: HmiStore
    auth: Authenticator

    @property
    def session_timeout_s(self) -> float:
        return self.config.session_timeout_min * 60.0

    @property
    def engine(self):
        return self.store.engine

    @property
    def archive_dir(self) -> Path:
        return Path(self.station.config.archive.dir)

    @cached_property  # read once: pages ask per row and per part, and the station file does not change
    def zone(self) -> dt.tzinfo:
        """The station's local time, in which every page shows and reads times (as exports and
        reports do): the station file's ``[shifts] timezone``, else the system's."""
        return station_zone(self.station.config.shifts.timezone)


def mount(station, config: HmiConfig | None = None, *, engine=None, throttle: LoginThrottle | None = None) -> HmiContext:
    """Register the HMI on NiceGUI's app for ``station``; returns the context the pages use."""
    from station.db.engine import make_engine
    from station.hmi.pages import register_all

    config = config or station.config.hmi
    if engine is None:
        engine = make_engine(station.config.database.url)
    try:
        ensure_schema(engine)
    except Exception as exc:  # the live view must still come up; history pages will show the error
        log.exception("HMI cannot prepare the database")
        station.alarms.raise_("hmi_database", "database", f"HMI cannot use the database: {exc}")
    store = HmiStore(engine)
    state = station.hmi_state  # a pipeline sink, wired and started by the station (station.app)
    if state is None:
        raise ValueError("this station was built without an HMI (Station(..., hmi=False) or [hmi] enabled = false)")
    ctx = HmiContext(station, config, state, store, Authenticator(store, throttle))
    _record_running_recipes(ctx)
    register_all(ctx)
    return ctx


def _record_running_recipes(ctx: HmiContext) -> None:
    """Store the recipe files found at start-up as versions, so the editor has a history to diff."""
    for loaded in ctx.station.recipes.recipes.values():
        try:
            ctx.store.ensure_recipe_version(loaded.recipe.name, loaded.recipe.version, loaded.text,
                                            loaded.content_hash, "file")
        except Exception:  # the HMI still serves the live view without the database
            log.exception("could not record recipe %s", loaded.recipe.name)


UI_RUN_OPTIONS = dict(
    title="Inspection station",
    reload=False,
    show=False,
    dark=True,
    show_welcome_message=False,
    reconnect_timeout=10.0,
    # each browser's replay buffer for reconnects holds live images (data URLs): keep it short
    message_history_length=200,
    # JPEG data URLs do not compress; per-message deflate only cost server CPU (measured: about
    # 1.5 ms of station-process CPU per part with 3 browsers, tools/hmi_bench.py)
    ws_per_message_deflate=False,
)


def _keep_sessions_in(directory: Path) -> None:
    """NiceGUI keeps per-browser storage (here: who is signed in) in files; by default in the
    working directory, which a service may not own. Put it next to the station's other data."""
    from nicegui.storage import Storage

    directory.mkdir(parents=True, exist_ok=True)
    Storage.path = directory.resolve()
    app.storage = Storage()


def run(station, config: HmiConfig | None = None, *, storage_secret: str | None = None) -> None:
    """Mount and serve until the process is stopped (blocks, like ``ui.run``)."""
    from station.hmi import security

    config = config or station.config.hmi
    tls_and_proxies = security.server_options(config)  # a bad certificate stops here, before anything starts
    _keep_sessions_in(Path(station.config.archive.dir).parent / "hmi-sessions")
    mount(station, config)
    security.install(app)  # headers on every response, request size limits, session keep-alive
    ui.run(
        host=config.host,
        port=config.port,
        # sessions do not outlive the process unless a secret is given: a restart signs everyone out
        storage_secret=storage_secret or secrets.token_urlsafe(32),
        session_middleware_kwargs=security.session_cookie(config),
        **tls_and_proxies,
        **UI_RUN_OPTIONS,
    )
