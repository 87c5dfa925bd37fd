"""The operator's day counters (station.counters): the period, the reset and its state file."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from station.counters import PartCounters, local_midnight
from station.inspection import Defect, Failure, Inspection, Outcome, RejectReason, Verdict, View
from tests.recipes import make_inspection


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


NOON = local_midnight(dt.datetime(2026, 3, 10, 12, tzinfo=dt.timezone.utc)) + dt.timedelta(hours=12)


def test_counts_by_class_or_reason_and_a_new_day_starts_from_zero():
    clock = Clock(NOON)
    c = PartCounters(clock=clock)
    for v in (Verdict(Outcome.PASS, "ok"), _reject("scratch"), Verdict.for_failure(Failure(RejectReason.CAMERA_ERROR, "lost")), None):
        c.record(_part(v))
    snap = c.snapshot()
    assert (snap.parts, snap.passed, snap.rejected) == (4, 1, 3)
    assert snap.reject_classes == {"scratch": 1, "camera_error": 1, "no verdict": 1}
    assert snap.since == local_midnight(NOON) and snap.day == NOON.astimezone().date()
    clock.t = local_midnight(NOON) + dt.timedelta(days=1, seconds=1)
    snap = c.snapshot()
    assert (snap.parts, snap.day, snap.since) == (0, clock.t.astimezone().date(), local_midnight(clock.t))


def test_reset_is_kept_in_the_state_file_for_the_rest_of_the_day(tmp_path):
    clock = Clock(NOON)
    state = tmp_path / "var" / "counters.json"
    c = PartCounters(state, clock=clock)
    c.record(_part(_reject("crack")))
    c.reset()
    assert c.snapshot().parts == 0 and c.snapshot().since == NOON
    assert dt.datetime.fromisoformat(json.loads(state.read_text())["reset_at"]) == NOON
    assert not list(state.parent.glob("*.tmp"))

    clock.t = NOON + dt.timedelta(hours=3)  # a restart later that day
    again = PartCounters(state, clock=clock)
    assert again.period_start() == NOON and again.snapshot().since == NOON
    clock.t = local_midnight(NOON) + dt.timedelta(days=1, hours=1)  # the next day runs from midnight
    assert again.period_start() == local_midnight(clock.t)


def test_a_bad_state_file_counts_from_midnight(tmp_path):
    state = tmp_path / "counters.json"
    for text in ("{not json", json.dumps({"reset_at": "2026-03-10T12:00:00"}), json.dumps({"other": 1}), "[]"):
        state.write_text(text)
        assert PartCounters(state, clock=Clock(NOON)).period_start() == local_midnight(NOON), text


def test_seed_replaces_the_count_and_a_stale_seed_is_refused():
    clock = Clock(NOON)
    c = PartCounters(clock=clock)
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
    c = PartCounters(clock=clock)
    doubtful = Defect("top", "crack", 0.6, (0, 0, 2, 2), 4)
    for v in (Verdict(Outcome.PASS, "ok"), _reject("scratch"), Verdict(Outcome.REVIEW, "review: crack", None, doubtful, 0xFFFD)):
        c.record(_part(v))
    snap = c.snapshot()
    assert (snap.parts, snap.passed, snap.rejected, snap.reviewed) == (3, 1, 1, 1)
    assert snap.reject_classes == {"scratch": 1}  # a review is not a reject of its class
    assert c.seed(snap.since, [("pass", None, None, 5), ("review", "crack", None, 2), ("reject", "stain", "defect", 1)])
    snap = c.snapshot()
    assert (snap.parts, snap.passed, snap.rejected, snap.reviewed) == (8, 5, 1, 2)
