"""Charts page: the ECharts options carry the numbers of the history database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from station.db.models import DefectRow, InspectionRow
from tests.hmi.conftest import login, only, run_parts

pytestmark = pytest.mark.asyncio


async def test_charts_match_the_database(hmi):
    ctx, new_user = hmi
    run_parts(ctx.station, 12)
    with ctx.store.session() as s:
        by_class = dict(s.execute(select(DefectRow.class_name, func.count()).group_by(DefectRow.class_name)).all())
        passed = s.scalar(select(func.count()).select_from(InspectionRow).where(InspectionRow.outcome == "pass"))
    user = await login(new_user(), "emil", "/charts")
    for _ in range(100):  # the charts fill in once their query (off the event loop) returns
        if only(user, "chart-pareto").options.get("xAxis"):
            break
        await asyncio.sleep(0.1)
    pareto = only(user, "chart-pareto").options
    names = pareto["xAxis"]["data"]
    counts = pareto["series"][0]["data"]
    assert dict(zip(names, counts)) == by_class
    assert counts == sorted(counts, reverse=True)
    assert pareto["series"][1]["data"][-1] == 100.0
    hours = only(user, "chart-yield-hour").options["series"][0]["data"]
    assert len(hours) in (1, 2)  # the parts ran within a minute (an hour boundary may split them)
    shifts = only(user, "chart-yield-shift").options["series"][0]["data"]
    assert len(shifts) in (1, 2)
    recipes = only(user, "chart-recipes").options
    assert recipes["xAxis"]["data"] == ["demo-part"]
    assert recipes["series"][0]["data"] == [round(100 * (12 - passed) / 12, 1)]
    if len(hours) == 1:
        assert hours[0] == round(100 * passed / 12, 1)


async def test_charts_with_no_data_say_so(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/charts")
    await user.should_see("No inspections in this window.")
    assert only(user, "chart-pareto").options["series"][0]["data"] == []


def test_hour_labels_are_the_buckets_start_on_the_station_clock_with_its_minutes():
    """The hourly buckets are UTC hours; in India or Nepal such an hour starts at :30 or :45 local
    time, and the chart (and the HTML report, same helper) say so instead of "HH:00"."""
    import datetime as dt
    import zoneinfo

    from station.db.queries import YieldBucket
    from station.hmi.pages.charts import yield_hour_options

    hours = [YieldBucket(dt.datetime(2026, 12, 5, h, tzinfo=dt.timezone.utc), 10, 9, 1) for h in (0, 1)]
    labels = {z: yield_hour_options(hours, zoneinfo.ZoneInfo(z))["xAxis"]["data"]
              for z in ("Asia/Kolkata", "Asia/Kathmandu", "Europe/Berlin")}
    assert labels == {"Asia/Kolkata": ["12-05 05:30", "12-05 06:30"], "Asia/Kathmandu": ["12-05 05:45", "12-05 06:45"],
                      "Europe/Berlin": ["12-05 01:00", "12-05 02:00"]}
    assert hours[0].local_start(zoneinfo.ZoneInfo("Asia/Kolkata")) == "2026-12-05 05:30"
