"""What `station demo` prints on its console, for a person who just started it.

First a banner with the HMI's address (and the PLC's, the log file, how to stop), then one
summary line every ``interval_s`` seconds. The one-line-per-part log (``station.parts``) goes
to the demo's log file, and to the console only with ``--verbose``: a part every half second
would scroll the address away before anyone reads it.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import time
from pathlib import Path
from typing import IO

from station.stats import StationStats

PART_LOGGER = "station.parts"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SUMMARY_INTERVAL_S = 10.0


class _NotPartLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(PART_LOGGER)


def route_logs(log_file: Path, *, verbose: bool) -> None:
    """Every log line (per-part lines included) to ``log_file`` (rotated at 10 MB, 3 kept); the
    console's handlers drop the per-part lines unless ``verbose``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if not verbose:
        for handler in root.handlers:
            handler.addFilter(_NotPartLines())
    to_file = logging.handlers.RotatingFileHandler(log_file, maxBytes=10 * 1024**2, backupCount=3, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    to_file.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(to_file)


def print_banner(lines: list[str], stream: IO[str] | None = None) -> None:
    """``lines`` framed, so the address stands out from the log lines around it."""
    stream = stream or sys.stdout
    width = max(len(line) for line in lines) + 4
    rule = "=" * width
    print("\n".join(["", rule, *(f"  {line}" for line in lines), rule, ""]), file=stream, flush=True)


def summary_line(snap: dict, previous_parts: int, elapsed_s: float) -> str:
    """One line from a ``StationStats.snapshot()``: parts (and new since the last line),
    pass / reject / review, yield, median time per part."""
    parts = snap["parts"]
    total = snap["latency_ms"].get("total", {})
    p50 = f"  p50 {total['p50']:.0f} ms" if total else ""
    yield_pct = f"{100.0 * snap['pass'] / parts:.1f} %" if parts else "-"
    return (f"{time.strftime('%H:%M:%S')}  parts {parts} (+{parts - previous_parts} in {elapsed_s:.0f} s)  "
            f"pass {snap['pass']}  reject {snap['reject']}  review {snap['review']}  yield {yield_pct}{p50}")


class PeriodicSummary:
    """A thread printing ``summary_line`` every ``interval_s`` seconds (and once more at ``stop``)."""

    def __init__(self, stats: StationStats, interval_s: float = SUMMARY_INTERVAL_S, stream: IO[str] | None = None):
        self.stats = stats
        self.interval_s = interval_s
        self.stream = stream or sys.stdout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._parts = stats.parts
        self._started = self._since = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-summary", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.print_line()

    def print_line(self) -> None:
        now = time.monotonic()
        snap = self.stats.snapshot()
        line = summary_line(snap, self._parts, now - self._since)
        self._parts, self._since = snap["parts"], now
        print(line, file=self.stream, flush=True)

    def stop(self) -> None:
        """Stop the thread and print the whole run's line ("in all")."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
            line = summary_line(self.stats.snapshot(), 0, time.monotonic() - self._started)
            print(line.replace("  parts ", "  in all: parts ", 1), file=self.stream, flush=True)
