"""Alarms shared by the PLC, the HMI and `station doctor`.

An alarm is raised by a source (camera, plc, model, database, disk, pipeline), stays
active until its cause clears, and an operator acknowledges it. Raising an already active
alarm only bumps its count, so a flapping cause does not flood the operator.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

log = logging.getLogger("station.alarms")


class Severity(str, enum.Enum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Alarm:
    key: str  # stable identity, e.g. "camera_lost:top"
    source: str
    message: str
    severity: Severity = Severity.ERROR
    raised_at_s: float = 0.0
    count: int = 1
    active: bool = True
    acknowledged: bool = False


class AlarmBoard:
    """Thread-safe set of alarms with change listeners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alarms: dict[str, Alarm] = {}
        self._listeners: list[Callable[[Alarm], None]] = []
        self.raised_total = 0

    def subscribe(self, listener: Callable[[Alarm], None]) -> None:
        self._listeners.append(listener)

    def raise_(self, key: str, source: str, message: str, severity: Severity = Severity.ERROR) -> Alarm:
        with self._lock:
            self.raised_total += 1
            old = self._alarms.get(key)
            if old and old.active:
                alarm = replace(old, count=old.count + 1, message=message)
            else:
                alarm = Alarm(key, source, message, severity, time.time())
                log.warning("alarm raised %s: %s", key, message)
            self._alarms[key] = alarm
        self._notify(alarm)
        return alarm

    def amend(self, key: str, message: str) -> None:
        """Say more about an alarm that is active without counting it as raised again
        (e.g. what was done about it); raises it when it is not active."""
        with self._lock:
            old = self._alarms.get(key)
            alarm = replace(old, message=message) if old and old.active else None
            if alarm:
                self._alarms[key] = alarm
        if alarm:
            self._notify(alarm)
        else:
            self.raise_(key, old.source if old else "station", message)

    def clear(self, key: str) -> None:
        with self._lock:
            old = self._alarms.get(key)
            if not old or not old.active:
                return
            alarm = replace(old, active=False)
            if alarm.acknowledged:
                del self._alarms[key]
            else:
                self._alarms[key] = alarm
            log.info("alarm cleared %s", key)
        self._notify(alarm)

    def acknowledge(self, key: str) -> None:
        with self._lock:
            old = self._alarms.get(key)
            if not old:
                return
            alarm = replace(old, acknowledged=True)
            if not alarm.active:
                del self._alarms[key]
            else:
                self._alarms[key] = alarm
        self._notify(alarm)

    def active(self) -> list[Alarm]:
        with self._lock:
            return [a for a in self._alarms.values() if a.active]

    def all(self) -> list[Alarm]:
        """Active alarms plus cleared ones not yet acknowledged, newest first."""
        with self._lock:
            return sorted(self._alarms.values(), key=lambda a: a.raised_at_s, reverse=True)

    def is_active(self, key: str) -> bool:
        with self._lock:
            a = self._alarms.get(key)
            return bool(a and a.active)

    def _notify(self, alarm: Alarm) -> None:
        for listener in list(self._listeners):
            try:
                listener(alarm)
            except Exception:  # a broken listener must not stop alarm handling
                log.exception("alarm listener failed")
