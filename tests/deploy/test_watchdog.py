"""The systemd watchdog pings only while the pipeline's publisher loop makes progress.

systemd's side is a real unix datagram socket named by NOTIFY_SOCKET; the pipeline is the
real one, with the simulated camera. A result sink that blocks wedges the publisher
thread, which is what a stuck pipeline looks like from the outside.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from station.alarms import AlarmBoard
from station.camera.simulated import SimulatedCamera
from station.config import SimulatedCameraConfig
from station.inspection import Outcome, Verdict
from station.pipeline import Findings, Pipeline
from station.recipe import load_recipe
from station.watchdog import ServiceWatchdog, watchdog_interval_s
from station.benchmarks.recipes import threshold_recipe_text

RECIPE = threshold_recipe_text("plate", ["scratch"], budget_ms=2000)


class PassEverything:
    model_hashes: dict = {}

    def preprocess(self, views):
        return views

    def find_defects(self, views):
        return Findings(defects=[], scores={})

    def decide(self, defects):
        return Verdict(Outcome.PASS, "no defect")


class BlockingSink:
    """Blocks the publisher thread inside publish() until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def publish(self, inspection) -> None:
        self.entered.set()
        self.release.wait(30)


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.02)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "150000")  # 150 ms: pings every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def drain(sock: socket.socket, seconds: float) -> list[str]:
    """Every datagram that arrives within ``seconds``."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    return out


def pings(messages: list[str]) -> int:
    return sum(1 for m in messages if "WATCHDOG=1" in m.splitlines())


def statuses(messages: list[str]) -> list[str]:
    return [line.removeprefix("STATUS=") for m in messages for line in m.splitlines() if line.startswith("STATUS=")]


@pytest.fixture
def pipeline(tmp_path: Path):
    recipe_file = tmp_path / "plate.toml"
    recipe_file.write_text(RECIPE)
    camera = SimulatedCamera(SimulatedCameraConfig(name="top", width=128, height=96))
    camera.open()
    pipe = Pipeline({"top": camera}, lambda loaded: PassEverything(), AlarmBoard())
    pipe.load_recipe(load_recipe(recipe_file))
    pipe.start()
    yield pipe
    camera.close()


def test_pings_stop_while_publisher_is_stuck_and_resume_after(notify_socket, pipeline):
    sink = BlockingSink()
    pipeline.sinks = [sink]
    watchdog = ServiceWatchdog(pipeline, stale_after_s=0.3)
    assert watchdog.interval_s == pytest.approx(0.05)
    stop = threading.Event()
    loop = threading.Thread(target=watchdog.run, args=(stop, 0.01), daemon=True)
    watchdog.ready("test")
    loop.start()
    try:
        healthy = drain(notify_socket, 0.5)
        assert healthy[0].splitlines()[0] == "READY=1"
        assert pings(healthy) >= 5, healthy  # ~10 expected at 50 ms

        pipeline.trigger(part_id=7)
        assert sink.entered.wait(5), "the part never reached the sink"
        # Pings already queued while the stall was younger than stale_after_s are legitimate;
        # read up to the watchdog's own "stalled" status, then nothing more may arrive.
        before_stall = drain(notify_socket, 0.6)
        assert any(m.startswith("STATUS=pipeline stalled") for m in before_stall), before_stall
        stuck = drain(notify_socket, 0.6)
        assert pings(stuck) == 0, stuck
        assert not watchdog.pipeline_alive()

        sink.release.set()
        resumed = drain(notify_socket, 0.5)
        assert pings(resumed) >= 3, resumed
        # the status line follows the counters: the stuck part has been counted since
        assert statuses(healthy)[-1] == "running: 0 parts, 0 pass, 0 reject, 0 review, 0 active alarm(s)"
        assert statuses(resumed)[-1] == "running: 1 parts, 1 pass, 0 reject, 0 review, 0 active alarm(s)"
    finally:
        sink.release.set()
        stop.set()
        loop.join(2)
        pipeline.stop(timeout_s=5)


def test_pings_stop_when_publisher_thread_is_gone(notify_socket, pipeline):
    watchdog = ServiceWatchdog(pipeline, stale_after_s=0.2)
    assert watchdog.tick()
    pipeline.stop(timeout_s=5)  # publisher thread exits: last_progress_s freezes
    drain(notify_socket, 0.3)
    sent = sum(watchdog.tick() for _ in range(5))
    assert sent == 0
    assert pings(drain(notify_socket, 0.1)) == 0


def test_no_systemd_means_no_pings(monkeypatch, pipeline):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    watchdog = ServiceWatchdog(pipeline)
    assert not watchdog.enabled and watchdog.interval_s is None
    assert watchdog.tick() is False
    watchdog.ready()  # harmless outside systemd
    pipeline.stop(timeout_s=5)


def test_interval_follows_watchdog_usec():
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == pytest.approx(10.0)
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None
    # a watchdog meant for another process (e.g. a wrapper shell) is not ours to ping
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


def test_context_manager_sends_ready_then_stopping(notify_socket, pipeline):
    with ServiceWatchdog(pipeline) as watchdog:
        assert watchdog.tick()
    messages = drain(notify_socket, 0.1)
    assert messages[0].startswith("READY=1")
    assert messages[1].splitlines()[0] == "WATCHDOG=1"
    assert messages[-1].startswith("STOPPING=1")
    pipeline.stop(timeout_s=5)
