"""Progress of one long step (a download, an export, a conversion) for the person waiting on it.

On a terminal it is a tqdm bar, redrawn at least once a second even while the step gives no
news (``torch.onnx.export`` runs for tens of seconds without a callback). Anywhere else (a log
file, systemd's journal, CI) it is plain log lines: one at the start, one every ``interval_s``
seconds, one at the end, so a log shows that the step is alive and how far it got.

Usage::

    with step("download mobile_sam.pt", total=size, unit="B") as p:
        for block in blocks:
            p.update(len(block))
    with step("export encoder"):  # no total: elapsed time only
        torch.onnx.export(...)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import IO, Iterator

log = logging.getLogger("station.progress")

LOG_INTERVAL_S = 10.0


def _size(n: float, unit: str) -> str:
    if unit != "B":
        return f"{n:.0f} {unit}"
    return f"{n / 1e6:.1f} MB"


def _columns(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


class Step:
    """One step's progress; ``update(n)`` as work is done, ``set_total`` when it becomes known."""

    def __init__(self, desc: str, total: float | None, unit: str, stream: IO[str] | None, tty: bool | None,
                 interval_s: float = LOG_INTERVAL_S, initial: float = 0):
        self.desc, self.total, self.unit, self.done = desc, total, unit, initial
        self.started = time.monotonic()
        self._interval = interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        stream = stream if stream is not None else sys.stderr
        self.tty = stream.isatty() if tty is None else tty
        self._bar = None
        if self.tty:
            from tqdm import tqdm

            sized = _columns(stream) > 0  # a serial console may report 0 columns: draw 80 then
            silent = {} if total else {"bar_format": "{desc}: {elapsed} elapsed"}  # nothing to count, only time
            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1024,
                             initial=initial, file=stream, dynamic_ncols=sized, ncols=None if sized else 80, leave=True,
                             **silent)
        else:
            extra = f" ({_size(initial, unit)} already there)" if initial else ""
            log.info("%s: started%s%s", desc, f", {_size(total, unit)}" if total else "", extra)
        self._ticker = threading.Thread(target=self._tick, name=f"progress:{desc}", daemon=True)
        self._ticker.start()

    def update(self, n: float) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)

    def set_total(self, total: float | None) -> None:
        with self._lock:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        if self.total:
            pct = 100.0 * self.done / self.total
            rate = (self.done / elapsed) if elapsed > 0 else 0.0
            return f"{_size(self.done, self.unit)} of {_size(self.total, self.unit)} ({pct:.0f} %), " \
                   f"{_size(rate, self.unit)}/s, {elapsed:.0f} s"
        if self.done:
            return f"{_size(self.done, self.unit)}, {elapsed:.0f} s"
        return f"{elapsed:.0f} s"

    def _tick(self) -> None:
        wait = 1.0 if self.tty else self._interval
        while not self._stop.wait(wait):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()  # keeps the elapsed time moving during a silent step
                else:
                    log.info("%s: still running (%s)", self.desc, self._line())

    def close(self, ok: bool = True) -> None:
        self._stop.set()
        self._ticker.join()
        if self._bar is not None:
            self._bar.close()
        elif ok:
            log.info("%s: done (%s)", self.desc, self._line())
        else:
            log.info("%s: stopped (%s)", self.desc, self._line())


@contextmanager
def step(desc: str, total: float | None = None, unit: str = "it", *, initial: float = 0,
         stream: IO[str] | None = None, tty: bool | None = None, interval_s: float = LOG_INTERVAL_S) -> Iterator[Step]:
    """A progress display for one step; ``tty`` forces the mode (default: whether ``stream`` is a terminal)."""
    s = Step(desc, total, unit, stream, tty, interval_s, initial)
    try:
        yield s
    except BaseException:
        s.close(ok=False)
        raise
    s.close()


def counting(s: Step):
    """A ``progress(done, total)`` callback (as ``station.vision.evaluate.evaluate`` calls it, with
    a running count) that advances ``s`` by what was done since the last call."""
    last = [0]

    def progress(done: int, _total: int) -> None:
        s.update(max(0, done - last[0]))
        last[0] = done

    return progress
