"""The operator's counters after a station restart: seeded from the verdicts in the real SQLite
history file, for the period the HMI shows (the current shift, or since the PLC's counter reset)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pytest

from station.db.writer import HistoryWriter
from station.alarms import AlarmBoard
from station.config import ArchiveConfig, DatabaseConfig
from station.inspection import Defect, Failure, Inspection, Outcome, RejectReason, Verdict, View
from tests.recipes import make_inspection
from tests.hmi.conftest import PASSWORDS, ROLES, login, only, run_parts, simulated_hmi
from tests.hmi.stand import make_station

pytestmark = pytest.mark.asyncio


def _part(seq: int, when: dt.datetime, kind: str) -> Inspection:
    """kind: "pass", a defect class name, "timeout" (fail-safe) or "none" (no verdict at all)."""
    img = np.full((48, 64), 120, np.uint8)
    defects, verdict = [], None
    if kind == "pass":
        verdict = Verdict(Outcome.PASS, "no defect")
    elif kind == "timeout":
        verdict = Verdict.for_failure(Failure(RejectReason.TIMEOUT, "budget exceeded"))
    elif kind != "none":
        d = Defect("top", kind, 0.9, (5, 5, 20, 12), 80, mask=np.zeros(img.shape, bool))
        defects = [d]
        verdict = Verdict(Outcome.REJECT, f"{kind} 80 px", RejectReason.DEFECT, d, plc_code=2)
    return make_inspection(seq, 1000 + seq, triggered_at_s=when.timestamp(), views=[View("top", img)],
                           defects=defects, verdict=verdict, timings_ms={"total": 10.0})


def write_history(root: Path, parts: list[tuple[str, dt.datetime, str]]) -> None:
    """Store (station_id, triggered_at, kind) verdicts in root/var/station.db with the real writer."""
    by_station: dict[str, list] = {}
    for station_id, when, kind in parts:
        by_station.setdefault(station_id, []).append((when, kind))
    for station_id, items in by_station.items():
        w = HistoryWriter(DatabaseConfig(url=f"sqlite:///{root / 'var' / 'station.db'}"),
                          ArchiveConfig(dir=root / "var" / "images"), AlarmBoard(), station_id)
        w.start()
        for seq, (when, kind) in enumerate(items, 1):
            w.publish(_part(seq, when, kind))
        assert w.flush(20)
        w.close()
        assert w.stats.written == len(items) and w.stats.lost == 0


def _counts(c) -> tuple:
    """What the operator sees of a ShiftCounters: parts, passed, rejected, rejects by class."""
    return c.parts, c.passed, c.rejected, c.reject_classes


async def _login_new_operator(ctx, new_user):
    for name, role in ROLES.items():
        ctx.auth.create_user(name, role, PASSWORDS[name], "test")
    return await login(new_user(), "olga")


async def _shows_counters(user, parts: int, passed: int, rejected: int) -> None:
    await user.should_see(str(parts), marker="count-parts", retries=50)
    await user.should_see(str(passed), marker="count-passed", retries=50)
    await user.should_see(str(rejected), marker="count-rejected", retries=50)


async def test_counters_start_from_the_shifts_verdicts_in_the_database(tmp_path):
    st = make_station(tmp_path)
    now = dt.datetime.now(dt.timezone.utc)
    shift = st.stats.shift.plan.span_at(now)  # the station file's calendar: 06/14/22 by default
    earlier = shift.start - dt.timedelta(minutes=30)
    this_shift = [("pass",) * 5, ("scratch",) * 3, ("crack",) * 2, ("timeout",), ("none",)]
    write_history(tmp_path, [("demo", now, kind) for kinds in this_shift for kind in kinds]
                  + [("demo", earlier, "crack")] * 4  # the shift before: not this shift's count
                  + [("line-2", now, "stain")] * 3)  # another station writing to the same database
    st.start()
    try:
        async with simulated_hmi(st) as (ctx, new_user):
            c = ctx.state.counters()
            assert (c.parts, c.passed, c.rejected) == (12, 5, 7)
            assert c.reject_classes == {"scratch": 3, "crack": 2, "timeout": 1, "no verdict": 1}
            assert c.shift == shift and c.since == shift.start
            user = await _login_new_operator(ctx, new_user)
            await _shows_counters(user, 12, 5, 7)
            await user.should_see("41.7 %", marker="count-yield", retries=50)
            zone = st.stats.shift.plan.zone()
            await user.should_see(f"{shift.name} shift · since {shift.start.astimezone(zone):%H:%M}", marker="count-since",
                                  retries=50)
            await user.should_see("scratch", retries=50)
            await user.should_see("no verdict", retries=50)
            await user.should_not_see("stain")

            live = st.stats.snapshot()
            run_parts(st, 4)  # the running station goes on counting from there
            snap = st.stats.snapshot()
            added = snap["parts"] - live["parts"]
            assert added == 4
            c = ctx.state.counters()
            assert c.parts == 16 and c.passed == 5 + snap["pass"] - live["pass"]
            await user.should_see("16", marker="count-parts", retries=50)
    finally:
        st.stop()


async def test_a_restart_shows_the_same_counters_as_before_it(tmp_path):
    first = make_station(tmp_path)
    first.start()
    try:
        run_parts(first, 10)
        before = first.stats.shift.snapshot()
    finally:
        first.stop()
    assert before.parts == 10 and before.rejected > 0, "the stand line should reject some parts"

    second = make_station(tmp_path)
    assert second.stats.shift.snapshot().parts == 0  # nothing counted before the start
    second.start()
    try:
        async with simulated_hmi(second) as (ctx, new_user):
            after = ctx.state.counters()
            assert _counts(after) == _counts(before)
            user = await _login_new_operator(ctx, new_user)
            await _shows_counters(user, before.parts, before.passed, before.rejected)
            for name in before.reject_classes:
                await user.should_see(name, retries=50)
    finally:
        second.stop()


async def test_a_counter_reset_survives_a_restart(tmp_path):
    first = make_station(tmp_path)
    first.start()
    try:
        run_parts(first, 4)
        time.sleep(0.01)  # the reset comes strictly after the stored trigger times
        first.stats.reset()  # what the PLC's RESET_COUNTERS does (station.plc.service)
        assert first.stats.shift.snapshot().parts == 0
        run_parts(first, 3, first_id=100)
        before = first.stats.shift.snapshot()
    finally:
        first.stop()
    assert before.parts == 3
    state_file = tmp_path / "var" / "counters.json"
    assert state_file.exists()

    second = make_station(tmp_path)
    second.start()
    try:
        async with simulated_hmi(second) as (ctx, new_user):
            after = ctx.state.counters()
            assert _counts(after) == _counts(before)
            assert after.since == before.since and after.since > after.shift.start
            user = await _login_new_operator(ctx, new_user)
            await _shows_counters(user, 3, before.passed, before.rejected)
            since = f"{after.shift.name} shift · since {after.since.astimezone():%H:%M} (counter reset)"
            await user.should_see(since, marker="count-since", retries=50)
            assert only(user, "count-since").text == since
    finally:
        second.stop()

    # the state file is what carries the reset: without it the whole shift counts again
    state_file.unlink()
    third = make_station(tmp_path)
    third.start()
    try:
        assert third.stats.shift.snapshot().parts == 7
    finally:
        third.stop()
