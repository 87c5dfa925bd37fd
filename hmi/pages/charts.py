"""Quality charts (ECharts): defect Pareto by class, yield and review rate per hour and per
shift, reject and review rate per recipe, over a chosen time window. Times on the axes are the
station's local time. Parts sent to review count apart from rejects.

The charts drill down: clicking a bar (or a point) opens the history filtered to the parts
behind it (``drill_down_url``): a Pareto class → the parts with a defect of that class in the
window; an hour or a shift → the parts of that hour or shift; a recipe's reject or review bar →
that recipe's rejects or reviews in the window. The review-rate series of the hour and shift
charts open that hour's or shift's reviews."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from nicegui import run, ui

from station.db.filters import HistoryFilter
from station.db.queries import HistoryQueries
from station.db.shift_report import shift_window
from station.shifts import ShiftPlan
from station.hmi.pages.latest import LatestAnswer
from station.hmi.pages.layout import frame, guard

WINDOWS = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30)}
AXIS = {"axisLabel": {"color": "#e5e7eb", "fontSize": 14}, "nameTextStyle": {"color": "#e5e7eb", "fontSize": 14}}
TITLE = {"textStyle": {"color": "#f3f4f6", "fontSize": 20}}


def chart_data(q: HistoryQueries, window: str, plan: ShiftPlan, now: dt.datetime | None = None) -> dict:
    """The numbers behind the four charts for the last ``window`` (a key of WINDOWS), shifts by
    ``plan`` (the station's calendar), and the window itself (``filter``: whole seconds, so that
    the history shows it exactly)."""
    now = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    flt = HistoryFilter(since=now - WINDOWS[window], until=now + dt.timedelta(seconds=1))
    pareto = q.pareto(flt, check=False)
    hours = q.yield_by_hour(flt, check=False)
    shifts = q.yield_by_shift(flt, plan, check=False)
    per_recipe = []
    for recipe in q.recipes():
        total = q.count(flt.model_copy(update={"recipe": recipe}), check=False)
        if total:
            rejects = q.count(flt.model_copy(update={"recipe": recipe, "verdict": "reject"}), check=False)
            reviews = q.count(flt.model_copy(update={"recipe": recipe, "verdict": "review"}), check=False)
            per_recipe.append((recipe, total, rejects, reviews))
    return {"pareto": pareto, "hours": hours, "shifts": shifts, "recipes": per_recipe, "filter": flt, "plan": plan}


def history_url(flt: HistoryFilter) -> str:
    """The history page showing the inspections of ``flt`` (times as ISO 8601 with offset)."""
    fields = {k: (v.isoformat() if isinstance(v, dt.datetime) else str(v))
              for k, v in flt.model_dump(exclude_none=True).items()}
    return "/history?" + urlencode(fields)


def drill_down_url(chart: str, data: dict, index: int, series: int = 0) -> str | None:
    """The history of the parts behind bar ``index`` of ``series`` in ``chart`` (a key of
    ``chart_data``'s result), within the chart's window; None if the index is stale."""
    window: HistoryFilter = data["filter"]
    rows = data[chart]
    if not 0 <= index < len(rows):
        return None
    row = rows[index]
    if chart == "pareto":
        return history_url(window.model_copy(update={"defect_class": row.class_name}))
    if chart == "hours":
        since, until = max(row.start, window.since), min(row.start + dt.timedelta(hours=1), window.until)
    elif chart == "shifts":
        start, end = shift_window(data["plan"], row.shift, row.date)
        since, until = max(start, window.since), min(end, window.until)
    elif chart == "recipes":
        verdict = "review" if series == 1 else "reject"
        return history_url(window.model_copy(update={"recipe": row[0], "verdict": verdict}))
    else:
        return None
    review = {"verdict": "review"} if series == 1 else {}  # the review-rate series: the parts sent to review
    return history_url(window.model_copy(update={"since": since, "until": until} | review))


def pareto_options(pareto) -> dict:
    return {
        "title": {"text": "Defect Pareto by class", **TITLE},
        "tooltip": {"trigger": "axis"},
        "legend": {"textStyle": {"color": "#e5e7eb"}, "top": 30},
        "grid": {"top": 70},
        "xAxis": {"type": "category", "data": [p.class_name for p in pareto], **AXIS},
        "yAxis": [{"type": "value", "name": "defects", **AXIS},
                  {"type": "value", "name": "cumulative %", "max": 100, **AXIS}],
        "series": [
            {"name": "defects", "type": "bar", "data": [p.count for p in pareto], "itemStyle": {"color": "#f87171"}},
            {"name": "cumulative %", "type": "line", "yAxisIndex": 1,
             "data": [round(100 * p.cumulative, 1) for p in pareto], "itemStyle": {"color": "#fbbf24"}},
        ],
    }


def _pct(n: int, total: int) -> float:
    return round(100 * n / total, 1) if total else 0.0


def yield_hour_options(hours, zone: dt.tzinfo) -> dict:
    return {
        "title": {"text": "Yield and review rate per hour", **TITLE},
        "tooltip": {"trigger": "axis"},
        "legend": {"textStyle": {"color": "#e5e7eb"}, "top": 30},
        "grid": {"top": 70},
        "xAxis": {"type": "category", "data": [b.local_start(zone, "%m-%d %H:%M") for b in hours], **AXIS},
        "yAxis": {"type": "value", "name": "%", "min": 0, "max": 100, **AXIS},
        "series": [{"name": "yield %", "type": "bar", "data": [round(b.yield_pct, 1) for b in hours],
                    "itemStyle": {"color": "#4ade80"},
                    "label": {"show": len(hours) <= 24, "position": "top", "color": "#e5e7eb"}},
                   {"name": "review %", "type": "line", "data": [_pct(b.reviewed, b.total) for b in hours],
                    "itemStyle": {"color": "#fbbf24"}}],
    }


def yield_shift_options(shifts) -> dict:
    return {
        "title": {"text": "Yield and review rate per shift", **TITLE},
        "tooltip": {"trigger": "axis"},
        "grid": {"top": 60},
        "xAxis": {"type": "category", "data": [f"{s.date:%m-%d} {s.shift}" for s in shifts], **AXIS},
        "yAxis": {"type": "value", "name": "yield %", "min": 0, "max": 100, **AXIS},
        "series": [{"name": "yield %", "type": "bar", "data": [round(s.yield_pct, 1) for s in shifts],
                    "itemStyle": {"color": "#60a5fa"}, "label": {"show": True, "position": "top", "color": "#e5e7eb"}},
                   {"name": "review %", "type": "bar", "data": [_pct(s.reviewed, s.total) for s in shifts],
                    "itemStyle": {"color": "#fbbf24"}}],
    }


def recipe_options(per_recipe) -> dict:
    return {
        "title": {"text": "Reject and review rate per recipe", **TITLE},
        "tooltip": {"trigger": "axis"},
        "legend": {"textStyle": {"color": "#e5e7eb"}, "top": 30},
        "grid": {"top": 70},
        "xAxis": {"type": "category", "data": [r for r, *_ in per_recipe], **AXIS},
        "yAxis": {"type": "value", "name": "%", "min": 0, **AXIS},
        "series": [{"name": "reject %", "type": "bar", "data": [_pct(rej, total) for _, total, rej, _ in per_recipe],
                    "itemStyle": {"color": "#f87171"}, "label": {"show": True, "position": "top", "color": "#e5e7eb"}},
                   {"name": "review %", "type": "bar", "data": [_pct(rev, total) for _, total, _, rev in per_recipe],
                    "itemStyle": {"color": "#fbbf24"}, "label": {"show": True, "position": "top", "color": "#e5e7eb"}}],
    }


def register(ctx) -> None:
    queries = HistoryQueries(ctx.engine)

    @ui.page("/charts")
    async def charts_page():
        user = guard(ctx, "engineer", "/charts")
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, "Charts")
        with ui.row().classes("items-center gap-4 px-4"):
            ui.label("Window").classes("text-xl")
            window = ui.toggle({k: f"last {k}" for k in WINDOWS}, value="24h").props("size=lg").mark("window")
            ui.label("Click a bar to see the parts behind it.").classes("text-lg text-gray-300")
            ui.link("Printable shift report ▶", "/report").classes("text-lg").mark("report-link")
        with ui.grid(columns=2).classes("w-full gap-4 px-4"):
            charts = {
                "pareto": ui.echart({}).classes("h-96").mark("chart-pareto"),
                "hours": ui.echart({}).classes("h-96").mark("chart-yield-hour"),
                "shifts": ui.echart({}).classes("h-96").mark("chart-yield-shift"),
                "recipes": ui.echart({}).classes("h-96").mark("chart-recipes"),
            }
        empty = ui.label("").classes("text-xl px-4").mark("charts-empty")
        shown: dict = {}  # the numbers the charts show now: a click drills into them, not into newer ones

        def drill(chart: str, e) -> None:
            url = drill_down_url(chart, shown, e.data_index, e.series_index) if shown else None
            if url:
                ui.navigate.to(url)

        for key, chart in charts.items():
            chart.on_point_click(lambda e, key=key: drill(key, e))

        answers = LatestAnswer()

        async def refresh() -> None:
            # off the event loop: a 7-day query of 160-200 ms froze every browser's live view
            mine = answers.ticket()
            data = await run.io_bound(chart_data, queries, window.value, ctx.station.config.shifts.plan())
            if answers.stale(mine):  # the window was changed again while this one was queried
                return
            shown.clear()
            shown.update(data)
            builders = {"pareto": pareto_options, "hours": lambda hours: yield_hour_options(hours, data["plan"].zone()),
                        "shifts": yield_shift_options,
                        "recipes": recipe_options}
            for key, chart in charts.items():
                chart.options.clear()
                chart.options.update(builders[key](data[key]))
                chart.update()
            empty.set_text("" if data["hours"] else "No inspections in this window.")

        window.on_value_change(refresh)
        await refresh()
