"""Station settings and health (admin): the running configuration (read-only: it is changed in
station.toml and takes effect at restart, so a browser can never half-apply it), per-stage
latency, history writer counters and the HMI's own render counters."""

from __future__ import annotations

import dataclasses
import json

from nicegui import ui

from station.hmi.pages.layout import frame, guard


def register(ctx) -> None:
    @ui.page("/settings")
    def settings_page():
        user = guard(ctx, "admin", "/settings")
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, "Settings")
        station = ctx.station
        with ui.row().classes("w-full gap-6 px-4 items-start"):
            with ui.column().classes("grow gap-2"):
                ui.label("Station configuration (station.toml, read-only)").classes("text-2xl font-bold")
                ui.code(json.dumps(station.config.model_dump(mode="json"), indent=2), language="json") \
                    .classes("w-full text-base").mark("station-config")
            with ui.column().classes("w-[34rem] gap-2"):
                ui.label("Stage latency (ms)").classes("text-2xl font-bold")
                latency = ui.table(columns=[{"name": k, "label": k, "field": k} for k in ("stage", "p50", "p99", "n")],
                                   rows=[], row_key="stage").props("dark flat").classes("text-lg").mark("latency")
                ui.label("History writer").classes("text-2xl font-bold mt-2")
                writer = ui.label("").classes("text-lg whitespace-pre").mark("writer-stats")
                ui.label("Live view").classes("text-2xl font-bold mt-2")
                live = ui.label("").classes("text-lg whitespace-pre").mark("hmi-stats")

        def refresh() -> None:
            latency.rows = [{"stage": s, **{k: v[k] for k in ("p50", "p99", "n")}}
                            for s, v in station.stats.latency().items()]
            latency.update()
            history = getattr(station, "history", None)
            if history is None:
                writer.set_text("not running (no history database)")
            else:
                writer.set_text("\n".join(f"{k}: {v}" for k, v in dataclasses.asdict(history.stats).items()))
            s = ctx.state
            live.set_text(f"received: {s.received}\nrendered: {s.rendered}\nskipped under load: {s.skipped}")

        refresh()
        ui.timer(2.0, refresh)
