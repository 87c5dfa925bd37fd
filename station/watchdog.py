"""systemd supervision: READY=1 once started, WATCHDOG=1 only while the pipeline is alive.

The unit (deploy/station.service) is ``Type=notify`` with ``WatchdogSec``. systemd passes
``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` in the environment; outside systemd both are absent
and every method here is a cheap no-op.

Liveness is ``pipeline.last_progress_s`` (``time.monotonic()`` seconds), which the
pipeline's publisher loop refreshes at least every 50 ms while it runs. The main loop calls
``ServiceWatchdog.tick()`` often; a ping is sent only when the publisher made progress within
``stale_after_s``. A stuck publisher (blocked sink, deadlock, dead thread) therefore stops the
pings, and systemd kills and restarts the station after ``WatchdogSec``: a station that
cannot publish verdicts must not look healthy to the supervisor. The main loop pinging on
its own would hide exactly that failure.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import sdnotify

log = logging.getLogger("station.watchdog")

DEFAULT_STALE_AFTER_S = 5.0  # publisher loop ticks every <= 50 ms; 5 s tolerates CPU hiccups on a busy board


class HasProgress(Protocol):
    last_progress_s: float  # time.monotonic() of the publisher loop's last iteration


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings: a third of ``WATCHDOG_USEC`` (µs), or None when systemd set none.

    A third rather than the half systemd suggests, so one late main-loop turn does not cost
    a restart. ``WATCHDOG_PID`` naming another process means the watchdog is not ours.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1e6 / 3 if value > 0 else None


class ServiceWatchdog:
    """Talks to systemd for the station process. Thread-safe; call ``tick()`` from the main loop."""

    def __init__(
        self,
        pipeline: HasProgress,
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        interval_s: float | None = None,
        notifier: sdnotify.SystemdNotifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``interval_s``: seconds between pings; default from ``WATCHDOG_USEC`` (None: no pings)."""
        self.pipeline = pipeline
        self.stale_after_s = stale_after_s
        self.interval_s = watchdog_interval_s() if interval_s is None else interval_s
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET")) or notifier is not None
        self._notifier = notifier or (sdnotify.SystemdNotifier() if self.enabled else None)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ping_s: float | None = None
        self._stalled = False
        self._last_status: str | None = None
        self.pings_sent = 0

    # ---- lifecycle messages -----------------------------------------------------------------
    def ready(self, status: str = "running") -> None:
        """Tell systemd start-up is complete (cameras open, recipe loaded, pipeline running)."""
        self._send(f"READY=1\nSTATUS={status}")
        log.info("systemd notified: ready (%s)", status)

    def stopping(self, status: str = "stopping: finishing parts in flight") -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        """One line shown by ``systemctl status station``."""
        self._send(f"STATUS={text}")

    # ---- liveness ---------------------------------------------------------------------------
    def pipeline_alive(self, now_s: float | None = None) -> bool:
        """True when the publisher loop made progress within ``stale_after_s``."""
        now_s = self._clock() if now_s is None else now_s
        return now_s - self.pipeline.last_progress_s <= self.stale_after_s

    def tick(self) -> bool:
        """Ping the watchdog if due and the pipeline is alive. Returns True when a ping was sent."""
        if self.interval_s is None or self._notifier is None:
            return False
        now = self._clock()
        with self._lock:
            if not self.pipeline_alive(now):
                if not self._stalled:
                    self._stalled = True
                    age = now - self.pipeline.last_progress_s
                    log.error(
                        "pipeline publisher made no progress for %.1f s: withholding watchdog pings so systemd restarts the station",
                        age,
                    )
                    self._send(f"STATUS=pipeline stalled for {age:.1f} s; expecting restart by the watchdog")
                    self._last_status = None  # on recovery the counters line replaces the stall notice
                return False
            if self._stalled:
                self._stalled = False
                log.warning("pipeline publisher progressing again; watchdog pings resumed")
            if self._last_ping_s is not None and now - self._last_ping_s < self.interval_s:
                return False
            self._last_ping_s = now
            self.pings_sent += 1
            status = self._status_line()
            changed = status is not None and status != self._last_status
            if changed:
                self._last_status = status
        # One datagram: systemd applies both assignments together.
        self._send("WATCHDOG=1" + (f"\nSTATUS={status}" if changed else ""))
        return True

    def _status_line(self) -> str | None:
        """Counters for `systemctl status station`, from the pipeline's stats and alarms if it has them."""
        stats = getattr(self.pipeline, "stats", None)
        if stats is None:
            return None
        try:
            line = f"running: {stats.parts} parts, {stats.passed} pass, {stats.rejected} reject, {stats.reviewed} review"
            alarms = getattr(self.pipeline, "alarms", None)
            if alarms is not None:
                line += f", {len(alarms.active())} active alarm(s)"
            return line
        except Exception:  # a status line must never cost a ping
            return None

    def run(self, stop: threading.Event, period_s: float | None = None, on_tick: Callable[[], None] | None = None) -> None:
        """Main-loop helper: ``tick()`` every ``period_s`` (default: a fifth of the interval,
        at most 1 s) until ``stop`` is set. ``on_tick`` runs each turn (e.g. to update STATUS)."""
        if period_s is None:
            period_s = min(1.0, (self.interval_s or 5.0) / 5)
        while not stop.wait(period_s):
            if on_tick is not None:
                on_tick()
            self.tick()

    def run_in_background(self, stop: threading.Event, period_s: float | None = None) -> threading.Thread:
        """``run()`` in a daemon thread, for when the main thread belongs to another loop (the
        HMI's event loop). Liveness still comes from the pipeline, not from this thread."""
        thread = threading.Thread(target=self.run, args=(stop, period_s), name="systemd-watchdog", daemon=True)
        thread.start()
        return thread

    # ---- context manager: READY=1 on entry, STOPPING=1 on exit ------------------------------
    def __enter__(self) -> "ServiceWatchdog":
        self.ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping()

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)


__all__ = ["ServiceWatchdog", "watchdog_interval_s", "DEFAULT_STALE_AFTER_S"]
