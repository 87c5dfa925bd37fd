"""The operator's shift counters (station.counters): the period, the reset and its state file."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import numpy as np

from station.counters import PartCounters
from station.inspection import Defect, Failure, Inspection, Outcome, RejectReason, Verdict, View
from station.shifts import ShiftPlan
from tests.recipes import make_inspection

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
PLAN = ShiftPlan.three_shifts("Europe/Berlin")  # early 06-14, late 14-22, night 22-06


class Clock:
    def __init__(self, t: dt.datetime):
        self.t = t

    def __call__(self) -> dt.datetime:
        return self.t


def _part(verdict: Verdict | None) -> Inspection:
    return make_inspection(1, views=[View("top", np.zeros((4, 4), np.uint8))], verdict=verdict)


def _reject(cls: str) -> Verdict:
    d = Defect("top", cls, 0.9, (0, 0, 2, 2), 4)
    return Verdict(Outcome.REJECT, cls, RejectReason.DEFECT, d, 2)


def berlin(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN)


NOON = berlin(2026, 3, 10, 12)


def counters(clock, state=None, plan=PLAN) -> PartCounters:
    return PartCounters(state, clock=clock, plan=plan)


def test_counts_by_class_or_reason_and_a_new_shift_starts_from_zero():
    clock = Clock(NOON)
    c = counters(clock)
    for v in (Verdict(Outcome.PASS, "ok"), _reject("scratch"), Verdict.for_failure(Failure(RejectReason.CAMERA_ERROR, "lost")), None):
        c.record(_part(v))
    snap = c.snapshot()
    assert (snap.parts, snap.passed, snap.rejected) == (4, 1, 3)
    assert snap.reject_classes == {"scratch": 1, "camera_error": 1, "no verdict": 1}
    assert snap.since == berlin(2026, 3, 10, 6) and snap.shift.name == "early" and snap.shift.date == dt.date(2026, 3, 10)
    clock.t = berlin(2026, 3, 10, 14, 0, 1)
    snap = c.snapshot()
    assert (snap.parts, snap.shift.name, snap.since) == (0, "late", berlin(2026, 3, 10, 14))


def test_the_night_shift_counts_across_midnight():
    clock = Clock(berlin(2026, 3, 10, 23))
    c = counters(clock)
    c.record(_part(Verdict(Outcome.PASS, "ok")))
    clock.t = berlin(2026, 3, 11, 0, 30)  # a new day, the same shift
    c.record(_part(_reject("crack")))
    clock.t = berlin(2026, 3, 11, 5, 59)
    snap = c.snapshot()
    assert (snap.parts, snap.shift.name, snap.shift.date, snap.since) == (2, "night", dt.date(2026, 3, 10), berlin(2026, 3, 10, 22))
    clock.t = berlin(2026, 3, 11, 6)
    assert (c.snapshot().parts, c.snapshot().shift.name) == (0, "early")


def test_night_shifts_across_dst_changes_last_9_and_7_hours():
    # clocks go back at 03:00 CEST on 25 Oct 2026: the night shift runs 9 hours
    clock = Clock(berlin(2026, 10, 24, 23))
    c = counters(clock)
    c.record(_part(Verdict(Outcome.PASS, "ok")))
    clock.t = dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.timezone.utc)  # 02:30 CET, the second 02:30 of the night
    c.record(_part(Verdict(Outcome.PASS, "ok")))
    clock.t = berlin(2026, 10, 25, 5, 30)
    snap = c.snapshot()
    assert snap.parts == 2 and snap.shift.name == "night" and snap.since == berlin(2026, 10, 24, 22)
    assert snap.shift.end - snap.shift.start == dt.timedelta(hours=9)
    # clocks go forward at 02:00 CET on 29 Mar 2026: 7 hours
    clock.t = berlin(2026, 3, 29, 3, 30)
    snap = c.snapshot()
    assert snap.parts == 0 and snap.shift.name == "night" and snap.shift.date == dt.date(2026, 3, 28)
    assert snap.shift.end - snap.shift.start == dt.timedelta(hours=7)
    assert snap.shift.end == berlin(2026, 3, 29, 6)


def test_reset_is_kept_in_the_state_file_for_the_rest_of_the_shift(tmp_path):
    clock = Clock(NOON)
    state = tmp_path / "var" / "counters.json"
    c = counters(clock, state)
    c.record(_part(_reject("crack")))
    c.reset()
    assert c.snapshot().parts == 0 and c.snapshot().since == NOON
    assert dt.datetime.fromisoformat(json.loads(state.read_text())["reset_at"]) == NOON
    assert not list(state.parent.glob("*.tmp"))

    clock.t = NOON + dt.timedelta(hours=1, minutes=30)  # a restart later in the shift
    again = counters(clock, state)
    assert again.period_start() == NOON and again.snapshot().since == NOON
    clock.t = berlin(2026, 3, 10, 14, 30)  # the next shift runs from its start
    assert again.period_start() == berlin(2026, 3, 10, 14)


def test_a_bad_state_file_counts_from_the_shift_start(tmp_path):
    state = tmp_path / "counters.json"
    for text in ("{not json", json.dumps({"reset_at": "2026-03-10T12:00:00"}), json.dumps({"other": 1}), "[]"):
        state.write_text(text)
        assert counters(Clock(NOON), state).period_start() == berlin(2026, 3, 10, 6), text


def test_a_calendar_with_a_gap_counts_the_time_between_shifts_apart():
    from station.config import ShiftsConfig

    plan = ShiftsConfig.model_validate({"timezone": "Europe/Berlin", "calendar": [
        {"name": "day", "start": "07:00", "end": "15:30"}, {"name": "late", "start": "15:30", "end": "23:00"}]}).plan()
    clock = Clock(berlin(2026, 3, 10, 23, 30))
    c = counters(clock, plan=plan)
    c.record(_part(Verdict(Outcome.PASS, "ok")))
    snap = c.snapshot()
    assert snap.shift.name is None and snap.since == berlin(2026, 3, 10, 23) and snap.shift.end == berlin(2026, 3, 11, 7)
    clock.t = berlin(2026, 3, 11, 7, 5)
    assert (c.snapshot().parts, c.snapshot().shift.name) == (0, "day")


def test_seed_replaces_the_count_and_a_stale_seed_is_refused():
    clock = Clock(NOON)
    c = counters(clock)
    c.record(_part(Verdict(Outcome.PASS, "ok")))
    since = c.period_start()
    rows = [("pass", None, None, 7), ("reject", "stain", "defect", 2), ("reject", None, "timeout", 1), ("reject", None, None, 1)]
    assert c.seed(since, rows)
    snap = c.snapshot()
    assert (snap.parts, snap.passed, snap.rejected) == (11, 7, 4)
    assert snap.reject_classes == {"stain": 2, "timeout": 1, "no verdict": 1}
    c.reset()  # the period moved on between reading the history and seeding
    assert not c.seed(since, rows) and c.snapshot().parts == 0


def test_review_verdicts_are_counted_apart_and_seeded_from_the_history():
    clock = Clock(NOON)
    c = counters(clock)
    doubtful = Defect("top", "crack", 0.6, (0, 0, 2, 2), 4)
    for v in (Verdict(Outcome.PASS, "ok"), _reject("scratch"), Verdict(Outcome.REVIEW, "review: crack", None, doubtful, 0xFFFD)):
        c.record(_part(v))
    snap = c.snapshot()
    assert (snap.parts, snap.passed, snap.rejected, snap.reviewed) == (3, 1, 1, 1)
    assert snap.reject_classes == {"scratch": 1}  # a review is not a reject of its class
    assert c.seed(snap.since, [("pass", None, None, 5), ("review", "crack", None, 2), ("reject", "stain", "defect", 1)])
    snap = c.snapshot()
    assert (snap.parts, snap.passed, snap.rejected, snap.reviewed) == (8, 5, 1, 2)
