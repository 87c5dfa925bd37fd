"""The printable shift report on the HMI: choose a shift, a day or a time range; the report
(``db.shift_report`` rendered by ``db.report_html``, the same file ``station history --report``
writes) is shown below and printed from the browser (Ctrl+P or the Print button: A4, light
paper, the page's header left out)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from fastapi import Response
from fastapi.responses import HTMLResponse
from nicegui import app, run, ui

from station.db.filters import FilterError, HistoryFilter
from station.db.queries import HistoryQueries
from station.db.report_html import render_html
from station.db.shift_report import build_report, current_shift, report_window
from station.hmi.auth import allows, session_user
from station.hmi.pages.latest import LatestAnswer
from station.hmi.pages.layout import frame, guard

WHOLE_DAY = "day"


def report_html(ctx, queries: HistoryQueries, shift: str, date: str, since: str, until: str) -> str:
    """The report's HTML for the page's choice (the station's shift calendar and its zone);
    FilterError naming the field."""
    plan = ctx.station.config.shifts.plan()
    times = HistoryFilter.parse(plan.zone(), since=since, until=until)
    start, end, title = report_window(plan, shift=None if shift == WHOLE_DAY else (shift or None),
                                      day=date or None, since=times.since, until=times.until)
    report = build_report(queries, HistoryFilter(since=start, until=end), plan.zone(), title)
    return render_html(report, ctx.archive_dir)


def register(ctx) -> None:
    queries = HistoryQueries(ctx.engine)

    @app.get("/hmi/report")
    async def report_file(shift: str = "", date: str = "", since: str = "", until: str = "") -> Response:
        user = session_user(app.storage.user, ctx.session_timeout_s, touch=False)
        if user is None or not allows(user.role, "engineer"):
            return Response(status_code=401)
        try:
            text = await run.io_bound(report_html, ctx, queries, shift, date, since, until)
        except FilterError as exc:
            return Response(f"{exc.field}: {exc.message}", status_code=400, media_type="text/plain")
        return HTMLResponse(text)

    @ui.page("/report")
    async def report_page(shift: str = "", date: str = ""):
        user = guard(ctx, "engineer", "/report")
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, "Shift report")
        plan = ctx.station.config.shifts.plan()
        running = current_shift(plan)
        if not shift and not date and running:
            shift, date = running[0], running[1].isoformat()
        date = date or dt.datetime.now(plan.zone()).date().isoformat()
        options = {s.name: f"{s.name} shift" for s in plan.shifts} | {WHOLE_DAY: "whole day"}
        with ui.row().classes("items-center gap-4 px-4"):
            shift_in = ui.select(options, value=shift if shift in options else WHOLE_DAY, label="Shift") \
                .props("outlined dark").classes("w-44").mark("report-shift")
            date_in = ui.input("Date (shift start)", value=date).props("type=date stack-label outlined dark") \
                .mark("report-date")
            show = ui.button("Show").props("size=lg").mark("report-show")
            ui.button("Print", on_click=lambda: ui.run_javascript(
                "document.getElementById('report-frame').contentWindow.print()")).props("size=lg color=secondary") \
                .mark("report-print")
            link = ui.link("open as a page", "").classes("text-lg").props("target=_blank").mark("report-link")
        error = ui.label("").classes("text-xl text-red-300 px-4").mark("report-error")
        frame_el = ui.element("iframe").props("id=report-frame").style(
            "width:100%; height:80vh; border:0; background:#fff").mark("report-frame")

        answers = LatestAnswer()

        async def refresh() -> None:
            shift, date = shift_in.value or "", date_in.value or ""
            mine = answers.ticket()
            try:
                text = await run.io_bound(report_html, ctx, queries, shift, date, "", "")
            except FilterError as exc:
                text, problem = None, f"{exc.field}: {exc.message}"
            if answers.stale(mine):  # Show was clicked again while this report was built
                return
            if text is None:
                error.set_text(problem)
                return
            error.set_text("")
            # the HMI may not be framed (hmi/security.py: X-Frame-Options DENY), so the frame
            # gets the document itself, not its address
            frame_el.props["srcdoc"] = text
            frame_el.update()
            link.props(f"href=/hmi/report?{urlencode({'shift': shift, 'date': date})}")

        show.on_click(refresh)
        await refresh()
