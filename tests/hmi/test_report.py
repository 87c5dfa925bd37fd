"""The printable shift report on the HMI and the charts' drill-down, with the simulated user on
a real station (real pipeline, real SQLite history and image archive)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import threading

import pytest
import simplejpeg
from nicegui.events import GenericEventArguments
from sqlalchemy import func, select

from station.db.models import DefectRow, ImageRow, InspectionRow
from station.db.shift_report import current_shift, shift_window
from station.shifts import ShiftPlan, system_zone_name
from tests.report_page import Page
from tests.hmi.conftest import login, only, run_parts, wait_set

pytestmark = pytest.mark.asyncio


def window_now() -> tuple[str, str, dt.datetime, dt.datetime]:
    """The shift running now (its name, start date, UTC window), independent of the code under test's choice."""
    plan = ShiftPlan.three_shifts(system_zone_name())  # the test station's calendar: the default
    name, day = current_shift(plan)
    since, until = shift_window(plan, name, day)
    return name, day.isoformat(), since, until


async def test_report_page_shows_the_shift_with_embedded_pictures(hmi):
    ctx, new_user = hmi
    run_parts(ctx.station, 14)
    name, day, since, until = window_now()
    with ctx.store.session() as s:
        window = (InspectionRow.triggered_at >= since, InspectionRow.triggered_at < until)
        counts = dict(s.execute(select(InspectionRow.outcome, func.count()).where(*window).group_by(InspectionRow.outcome)).all())
        rejects = set(s.scalars(select(InspectionRow.id).where(*window, InspectionRow.outcome == "reject")))
        overlays = {i.id: i.inspection_id for i in s.scalars(select(ImageRow).where(ImageRow.kind == "overlay"))}
    total = sum(counts.values())
    assert total == 14 and rejects  # (a test run across a shift change would split them: then rerun)
    user = await login(new_user(), "emil", "/report")
    await user.should_see(marker="report-frame", retries=30)
    assert only(user, "report-shift").value == name and only(user, "report-date").value == day
    response = await user.http_client.get(f"/hmi/report?shift={name}&date={day}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    assert page.ids["kpi-total"].split() == ["parts", str(total)]
    assert page.ids["kpi-reject"].split() == ["reject", str(counts.get("reject", 0))]
    assert page.ids["kpi-pass"].split() == ["pass", str(counts.get("pass", 0))]
    assert page.external == [] and page.cards and set(page.cards) <= rejects
    pictures = [img for img in page.images if img.get("data-image-id")]
    assert len(pictures) == len(page.cards)
    for img in pictures:
        assert overlays[int(img["data-image-id"])] == img["card"]
        thumb = simplejpeg.decode_jpeg(base64.b64decode(img["src"].split(",", 1)[1]))
        assert 0 < max(thumb.shape[:2]) <= 320
    # a bad choice is said on the page; the report route refuses it with the reason
    only(user, "report-date").value = "2026-02-30"
    user.find(marker="report-show").click()
    await user.should_see("is not a date", retries=30)
    bad = await user.http_client.get("/hmi/report?shift=noon")
    assert bad.status_code == 400 and "unknown shift 'noon'" in bad.text


async def test_a_report_asked_for_earlier_never_replaces_the_answer_to_a_later_one(hmi, monkeypatch):
    """Show clicked twice: the first report is still being built (a slow history) when the second
    answers; the first, finishing last, must not replace the second on the page."""
    ctx, new_user = hmi
    # the page module the HMI just mounted (NiceGUI's test reset re-imports the app's modules)
    from station.hmi.pages import report as report_page

    real = report_page.report_html
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def first_held(ctx_, queries, shift, date, since, until):
        if date != "2026-01-05":
            return real(ctx_, queries, shift, date, since, until)
        started.set()
        release.wait(20)
        try:
            return real(ctx_, queries, shift, date, since, until)
        finally:
            finished.set()

    monkeypatch.setattr(report_page, "report_html", first_held)
    user = await login(new_user(), "emil", "/report")
    await user.should_see(marker="report-frame", retries=30)
    only(user, "report-date").value = "2026-01-05"
    user.find(marker="report-show").click()
    await wait_set(started)
    only(user, "report-date").value = "2026-02-30"
    user.find(marker="report-show").click()
    await user.should_see("is not a date", retries=30)
    release.set()
    await wait_set(finished)
    await asyncio.sleep(0.3)  # the held refresh resumes on the event loop after its thread returns
    assert "is not a date" in only(user, "report-error").text
    assert "2026-01-05" not in only(user, "report-link").props["href"]


async def test_report_needs_an_engineer(hmi):
    ctx, new_user = hmi
    anonymous = new_user()
    assert (await anonymous.http_client.get("/hmi/report")).status_code == 401
    operator = await login(new_user(), "olga", "/")
    assert (await operator.http_client.get("/hmi/report")).status_code == 401


async def test_a_pareto_click_opens_the_history_of_the_parts_behind_the_bar(hmi):
    ctx, new_user = hmi
    run_parts(ctx.station, 16)
    user = await login(new_user(), "emil", "/charts")
    pareto = only(user, "chart-pareto")
    for _ in range(100):  # the charts fill in once their query (off the event loop) returns
        if pareto.options.get("xAxis"):
            break
        await asyncio.sleep(0.1)
    classes = pareto.options["xAxis"]["data"]
    assert classes
    index = len(classes) - 1  # the smallest bar
    # the event the browser sends when the bar is clicked (the real click: tests/hmi/test_quality_browser.py)
    clicks = [lst for lst in pareto._event_listeners.values() if lst.type == "componentClick"]
    assert len(clicks) == 1
    clicks[0].handler(GenericEventArguments(sender=pareto, client=pareto.client, args={
        "componentType": "series", "seriesType": "bar", "seriesIndex": 0, "seriesName": "defects",
        "name": classes[index], "dataIndex": index, "data": 0, "value": 0}))
    await user.should_see("inspections match", retries=30)
    with ctx.store.session() as s:
        expected = set(s.scalars(select(DefectRow.inspection_id).where(DefectRow.class_name == classes[index])))
        parts = dict(s.execute(select(InspectionRow.id, InspectionRow.part_id).where(InspectionRow.id.in_(expected))).all())
    await user.should_see(f"{len(expected)} inspections match", retries=30)
    assert only(user, "f-class").value == classes[index]
    assert {r["part"] for r in only(user, "history-table").rows} == set(parts.values())


@pytest.mark.parametrize("chart,series,where", [
    ("shifts", 0, lambda: ()),  # the shift's parts (all of them ran in it)
    ("recipes", 0, lambda: (InspectionRow.outcome == "reject",)),  # the recipe's reject bar: its rejects
])
async def test_shift_and_recipe_bars_drill_down_to_their_parts(hmi, chart, series, where):
    from station.hmi.pages.charts import chart_data, drill_down_url
    from station.db.queries import HistoryQueries

    ctx, new_user = hmi
    run_parts(ctx.station, 12)
    data = chart_data(HistoryQueries(ctx.engine), "24h", ctx.station.config.shifts.plan())
    url = drill_down_url(chart, data, 0, series)
    assert url.startswith("/history?") and drill_down_url(chart, data, 99, series) is None
    with ctx.store.session() as s:
        expected = set(s.scalars(select(InspectionRow.part_id).where(*where())))
    user = await login(new_user(), "emil", "/history")
    await user.open(url)
    await user.should_see(f"{len(expected)} inspections match", retries=30)
    assert {r["part"] for r in only(user, "history-table").rows} == expected
