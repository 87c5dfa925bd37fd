"""The embedded demo: a conveyor that triggers parts, and the headless run summary."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from station.config import StationConfig
from station.paths import SHIPPED_RECIPES
from station.inspection import Inspection
from station.pipeline import Pipeline, TriggerRefused

log = logging.getLogger("station.demo")



def demo_recipes(root: Path) -> Path:
    """The demo's own recipe folder, ``root/var/recipes``: copies of the repository's recipes.

    The HMI's recipe editor writes recipe files; the demo must not rewrite the repository's.
    Recipes missing from the copy are added at each start; edited ones are kept (delete the
    folder to start over from the shipped recipes).
    """
    target = root / "var" / "recipes"
    target.mkdir(parents=True, exist_ok=True)
    for src in sorted(SHIPPED_RECIPES.glob("*.toml")):
        dst = target / src.name
        if not dst.exists():
            shutil.copyfile(src, dst)
    return target


def demo_config(root: Path, **overrides) -> StationConfig:
    """Embedded defaults rooted at ``root`` (var/ lives there), with copies of the shipped recipes."""
    if "recipes_dir" not in overrides:
        overrides["recipes_dir"] = str(demo_recipes(root))
    return StationConfig.embedded(root, **overrides)


class Conveyor:
    """Triggers parts into the pipeline like a line with a part every ``interval_s`` seconds.

    When the station refuses a part (queue full), the conveyor waits and offers it again,
    so a headless run inspects exactly the number of parts asked for. With ``max_in_flight``
    the line is paced to the station: no part is offered while that many are being inspected,
    so on a slow machine parts come slower instead of waiting in a queue until their time
    budget runs out (a timeout reject that says nothing about the part).
    """

    def __init__(self, pipeline: Pipeline, interval_s: float = 0.0, first_part_id: int = 1,
                 max_in_flight: int | None = None):
        self.pipeline = pipeline
        self.interval_s = interval_s
        self.max_in_flight = max_in_flight
        self.next_part_id = first_part_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.triggered: list[int] = []

    def trigger_one(self) -> int:
        while not self._stop.is_set():
            if self.max_in_flight is not None and not self.pipeline.wait_in_flight_below(self.max_in_flight, 0.5):
                continue
            try:
                seq = self.pipeline.trigger(self.next_part_id)
            except TriggerRefused:
                time.sleep(0.005)
                continue
            self.next_part_id += 1
            self.triggered.append(seq)
            return seq
        raise RuntimeError("conveyor stopped")

    def run(self, parts: int | None = None) -> None:
        n = 0
        while not self._stop.is_set() and (parts is None or n < parts):
            started = time.monotonic()
            self.trigger_one()
            n += 1
            rest = self.interval_s - (time.monotonic() - started)
            if rest > 0:
                self._stop.wait(rest)

    def start(self, parts: int | None = None) -> None:
        self._thread = threading.Thread(target=self.run, args=(parts,), name="conveyor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)


class VerdictRecorder:
    """A result sink that keeps the verdicts of a headless run, in publication order."""

    def __init__(self) -> None:
        self.inspections: list[dict] = []
        self._lock = threading.Lock()

    def publish(self, inspection: Inspection) -> None:
        with self._lock:
            self.inspections.append(inspection.summary())


def run_headless(pipeline: Pipeline, recorder: VerdictRecorder, parts: int, interval_s: float = 0.0,
                 timeout_s: float = 600.0, max_in_flight: int | None = None) -> list[dict]:
    """Trigger ``parts`` parts and wait for all their verdicts; returns their summaries in order
    (``recorder`` is one of the station's sinks: Station(..., sinks=[recorder]))."""
    conveyor = Conveyor(pipeline, interval_s, max_in_flight=max_in_flight)
    conveyor.run(parts)
    if conveyor.triggered and not pipeline.wait_published(conveyor.triggered[-1], timeout_s):
        raise TimeoutError(f"parts still in flight after {timeout_s:.0f} s")
    return list(recorder.inspections)



def _hmi_serving() -> bool:
    from nicegui.server import Server

    return bool(getattr(getattr(Server, "instance", None), "started", False))


def when_hmi_serves(action: Callable[[], None], poll_s: float = 0.05) -> threading.Thread:
    """Run ``action`` in a thread once the HMI's server listens (its address answers from then on)."""

    def wait() -> None:
        while not _hmi_serving():
            time.sleep(poll_s)
        action()

    thread = threading.Thread(target=wait, name="demo-hmi-serving", daemon=True)
    thread.start()
    return thread


def stop_hmi_after(stats, parts: int, poll_s: float = 0.1) -> threading.Thread:
    """A thread that stops the HMI's server (and so `station demo`) once ``parts`` parts have
    verdicts (``stats.parts``), not before the server is up."""

    def watch() -> None:
        from nicegui.server import Server

        while stats.parts < parts or not _hmi_serving():
            time.sleep(poll_s)
        log.info("%d parts inspected: stopping the demo", stats.parts)
        Server.instance.should_exit = True

    thread = threading.Thread(target=watch, name="demo-stop-after", daemon=True)
    thread.start()
    return thread
