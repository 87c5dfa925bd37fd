"""The operator's part counters: parts, pass, reject, review and rejects per class in the current
counting period: the current shift of the station's shift calendar (station.shifts, from the
station file's ``[shifts]``; default early 06–14, late 14–22, night 22–06, local time), or
the time since the last counter reset (the PLC's RESET_COUNTERS) if that came later in it.

They survive a restart of the station: every verdict is in the history database, so at
start-up the station seeds them from it (``Station._start``, before the first part), and the
time of the last reset is kept in a small state file under the var dir, so that a reset is
still a reset after the restart.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from station.shifts import ShiftPlan, ShiftSpan, system_zone_name
from station.state_file import write_json_atomically
from station.inspection import Inspection, Outcome

log = logging.getLogger("station.counters")

NO_VERDICT = "no verdict"


@dataclass
class ShiftCounters:
    """Counts of the shift instance ``shift`` since ``since`` (aware; the shift's start or the last reset)."""

    shift: ShiftSpan
    parts: int = 0
    passed: int = 0
    rejected: int = 0
    reject_classes: Counter = field(default_factory=Counter)
    since: dt.datetime | None = None
    reviewed: int = 0  # sent to a person (REVIEW verdicts), counted apart from the rejects

    @property
    def yield_pct(self) -> float:
        return 100.0 * self.passed / self.parts if self.parts else 0.0


def reject_key(top_class: str | None, reject_reason: str | None) -> str:
    """What a reject is counted under: its top defect's class, else the fail-safe reason."""
    return top_class or reject_reason or NO_VERDICT


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class PartCounters:
    """Thread-safe shift counters with a persistent reset time.

    ``plan`` is the shift calendar (default: three 8-hour shifts in the system's time zone).
    ``state_file`` (JSON, ``{"reset_at": ISO time}``) keeps the last reset across restarts;
    without it a reset lasts until the process ends. ``clock`` returns an aware datetime.
    """

    def __init__(self, state_file: Path | None = None, *, clock: Callable[[], dt.datetime] = _utcnow,
                 plan: ShiftPlan | None = None):
        self.state_file = state_file
        self.plan = plan or ShiftPlan.three_shifts(system_zone_name())
        self._clock = clock
        self._lock = threading.Lock()
        self.reset_at = self._load_reset()
        self._c = self._fresh(clock())

    # ---- period -----------------------------------------------------------------------------
    def period_start(self, now: dt.datetime | None = None) -> dt.datetime:
        """Start of the shift holding ``now`` (default: the clock), or the last reset if later in it."""
        return self._period(now or self._clock())[1]

    def _period(self, now: dt.datetime) -> tuple[ShiftSpan, dt.datetime]:
        span = self.plan.span_at(now)
        if self.reset_at is not None and span.start <= self.reset_at <= now:
            return span, self.reset_at
        return span, span.start

    def _fresh(self, now: dt.datetime) -> ShiftCounters:
        span, since = self._period(now)
        return ShiftCounters(span, since=since)

    def _current(self) -> ShiftCounters:
        """The running counters; a new shift starts from zero. Call with the lock held."""
        now = self._clock()
        if not self._c.shift.start <= now < self._c.shift.end:
            self._c = self._fresh(now)
        return self._c

    # ---- counting ---------------------------------------------------------------------------
    def record(self, insp: Inspection) -> None:
        """Count one published part. No verdict at all counts as a reject, never a pass."""
        v = insp.verdict
        if v is not None and v.outcome is Outcome.PASS:
            self._add(Outcome.PASS.value, None, None, 1)
        elif v is not None and v.outcome is Outcome.REVIEW:
            self._add(Outcome.REVIEW.value, None, None, 1)
        else:
            top = v.top_defect.class_name if v is not None and v.top_defect is not None else None
            reason = v.reject_reason.value if v is not None and v.reject_reason is not None else None
            self._add(Outcome.REJECT.value, top, reason, 1)

    def seed(self, since: dt.datetime, groups: Iterable[tuple[str, str | None, str | None, int]]) -> bool:
        """Take the counts of the period that started at ``since`` from the history: rows of
        (outcome, top_class, reject_reason, count). They replace what was counted (call before
        parts flow, so a second start of the same station does not count twice). Ignored
        (False) if the period has moved on since ``since`` was read."""
        with self._lock:
            if self._current().since != since:
                return False
            self._c = ShiftCounters(self._c.shift, since=since)
            for outcome, top_class, reject_reason, n in groups:
                self._add_locked(outcome, top_class, reject_reason, n)
        return True

    def _add(self, outcome: str, top_class: str | None, reject_reason: str | None, n: int) -> None:
        with self._lock:
            self._current()
            self._add_locked(outcome, top_class, reject_reason, n)

    def _add_locked(self, outcome: str, top_class: str | None, reject_reason: str | None, n: int) -> None:
        c = self._c
        c.parts += n
        if outcome == Outcome.PASS.value:
            c.passed += n
        elif outcome == Outcome.REVIEW.value:
            c.reviewed += n
        else:
            c.rejected += n
            c.reject_classes[reject_key(top_class, reject_reason)] += n

    def reset(self) -> None:
        """Zero the counters from now on, and remember when (the state file, if any)."""
        now = self._clock()
        with self._lock:
            self.reset_at = now.astimezone(dt.timezone.utc)
            self._c = self._fresh(now)
        self._save_reset(self.reset_at)

    def snapshot(self) -> ShiftCounters:
        with self._lock:
            c = self._current()
            return ShiftCounters(c.shift, c.parts, c.passed, c.rejected, Counter(c.reject_classes), c.since, c.reviewed)

    # ---- the state file ---------------------------------------------------------------------
    def _load_reset(self) -> dt.datetime | None:
        if self.state_file is None or not self.state_file.exists():
            return None
        try:
            value = dt.datetime.fromisoformat(json.loads(self.state_file.read_text())["reset_at"])
            if value.tzinfo is None:
                raise ValueError("reset_at has no time zone")
            return value.astimezone(dt.timezone.utc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # the counters then run from the shift's start: worth a log line, not worth refusing to start
            log.warning("ignoring counter state file %s: %s", self.state_file, exc)
            return None

    def _save_reset(self, when: dt.datetime) -> None:
        if self.state_file is None:
            return
        try:
            write_json_atomically(self.state_file, {"reset_at": when.isoformat()})
        except OSError as exc:
            log.error("counter reset not saved to %s (a restart will count from the shift's start again): %s",
                      self.state_file, exc)
