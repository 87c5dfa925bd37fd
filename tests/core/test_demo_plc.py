"""The demo's line: the simulated PLC drives parts through the station's real Modbus server."""

from __future__ import annotations

import socket
import time

import pytest

from station.app import Station
from station.demo import demo_config
from station.plc.simulator import PlcSimulator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_simulated_plc_runs_parts_through_modbus_and_history(tmp_path, demo_models):
    port = free_port()
    config = demo_config(tmp_path, plc={"port": port}, hmi={"enabled": False})
    station = Station(config)
    station.start()
    plc = PlcSimulator("127.0.0.1", port, interval_s=0.05)
    try:
        plc.start()
        end = time.monotonic() + 60
        while len(plc.counts.results) < 20 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        plc.stop()
        station.stop()
    results = plc.counts.results
    assert len(results) >= 20
    seqs = [r[0] for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none lost, none duplicated, in order
    part_ids = [r[1] for r in results]
    assert part_ids == sorted(set(part_ids)) and part_ids[0] >= 1  # part IDs echoed, each once
    assert plc.counts.triggered >= len(results) + plc.counts.refused  # a refused part gets no result
    assert plc.counts.passed > 0 and plc.counts.rejected > 0
    assert station.stats.parts >= len(results)
    assert station.plc is None  # stopped
    assert not [a for a in station.alarms.active() if not a.key.startswith("plc")], station.alarms.active()


def test_plc_port_in_use_is_a_startup_error_and_nothing_keeps_running(tmp_path):
    from station.app import StartupError

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        station = Station(demo_config(tmp_path, active_recipe="plate-threshold", plc={"port": port}, hmi={"enabled": False}))
        with pytest.raises(StartupError, match=str(port)):
            station.start()
    assert not station.started and station.history is None and station.plc is None
    assert not station.pipeline.running


def test_unknown_active_recipe_is_a_startup_error_and_cameras_are_closed(tmp_path):
    from station.app import StartupError

    station = Station(demo_config(tmp_path, active_recipe="no-such-part", plc={"enabled": False}, hmi={"enabled": False}))
    with pytest.raises(StartupError, match="no-such-part"):
        station.start()
    assert not any(cam.connected for cam in station.cameras.values())
