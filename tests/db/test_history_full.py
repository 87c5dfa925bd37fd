"""Issue 19.2: the history cannot be written (a real full disk) while the line runs.

A real Station (replay camera on a real tile photo, threshold recipe, Modbus server) keeps its
SQLite history, archive and verdict journal on a tmpfs of 8 MiB; once it runs, a filler file
takes every free byte, so the database cannot grow. The PLC is a pymodbus master over loopback.

- on_history_full = "stop": the verdicts go on into the journal (its space was reserved at
  start-up) up to the backlog bound, then triggers are refused with error code HISTORY_FULL (7)
  and READY drops; space back, the backlog drains, every verdict the PLC saw is stored and
  triggers are taken again.
- on_history_full = "continue": parts are taken on; past the bound each verdict is counted as
  unrecorded, in the PLC's registers 118-119, the HMI's status, `station doctor` and an alarm.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from history_testkit import fill, tiny_tmpfs
from station.app import Station
from station.config import StationConfig
from station.db.writer import ALARM_FULL, ALARM_UNRECORDED
from station.doctor import check_history_record
from station.hmi.state import HmiState
from station.plc.registers import ErrorCode, Out, Status, join_u32
from tests.plc.conftest import PlcMaster, free_port, part_id_of, wait_until
from tests.vision.conftest import BLOB_RECIPE

TILE = "magnetic-tile-train/MT_Free/Imgs/exp1_num_106151.jpg"
BACKLOG = 20


def config_on(fs: Path, tmp: Path, shared: Path, port: int, policy: str) -> StationConfig:
    (tmp / "recipes").mkdir(exist_ok=True)
    (tmp / "recipes" / "blobs.toml").write_text(BLOB_RECIPE.format(extra=""), encoding="utf-8")
    (tmp / "in").mkdir(exist_ok=True)
    (tmp / "in" / "tile.jpg").write_bytes((shared / "data" / TILE).read_bytes())
    return StationConfig.model_validate({
        "station_id": "full",
        "recipes_dir": str(tmp / "recipes"),
        "active_recipe": "blobs",
        "models_dir": str(tmp / "models"),
        "cameras": [{"type": "replay", "name": "top", "path": str(tmp / "in")}],
        "plc": {"host": "127.0.0.1", "port": port},
        "database": {"url": f"sqlite:///{fs / 'history.db'}", "queue_size": BACKLOG, "on_history_full": policy,
                     "journal_dir": str(fs / "journal")},
        "archive": {"dir": str(fs / "images")},
        "inference": {"backend": "onnxruntime", "threads": 1},
        "hmi": {"enabled": False},
    })


def run_parts(plc: PlcMaster, first: int, count: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Trigger ``count`` parts one after the other, taking each result; (part IDs whose results
    the PLC saw, (part ID, error code) of refused triggers)."""
    seen, refused = [], []
    for pid in range(first, first + count):
        answer = plc.trigger(pid)
        if answer[Out.STATUS] & Status.TRIGGER_FAILED:
            refused.append((pid, answer[Out.ERROR_CODE]))
            continue
        seen.append(part_id_of(plc.take_result()))
    return seen, refused


def stored_parts(fs: Path) -> list[int]:
    with sqlite3.connect(fs / "history.db") as db:
        return [r[0] for r in db.execute("SELECT part_id FROM inspections ORDER BY part_id")]


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_full_disk_stop_refuses_triggers_continue_counts_unrecorded(tmp_path, shared_dir, policy):
    with tiny_tmpfs(tmp_path / "fs", 8192) as fs:
        port = free_port()
        station = Station(config_on(fs, tmp_path, shared_dir, port, policy))
        station.start()
        plc = PlcMaster(port)
        try:
            seen, refused = run_parts(plc, 1, 3)
            assert seen == [1, 2, 3] and not refused
            assert station.history.flush(10)
            filler = fill(fs)  # the disk is full from here on
            seen2, refused2 = run_parts(plc, 4, BACKLOG + 15)
            seen += seen2
            if policy == "stop":
                assert refused2, "triggers were taken with the backlog full"
                assert {code for _, code in refused2} == {ErrorCode.HISTORY_FULL}
                assert len(seen2) >= BACKLOG and station.history.unrecorded == 0
                out = plc.outputs()
                assert not out[Out.STATUS] & Status.READY and out[Out.ERROR_CODE] == ErrorCode.HISTORY_FULL
                wait_until(lambda: station.alarms.is_active(ALARM_FULL), 5)
                ok, text = HmiState(station).history_label()
                assert not ok and "FULL" in text
                wait_until(lambda: check_history_record(station.config).status == "fail", 5)
                filler.unlink()  # space again: the backlog drains, the line goes on
                assert station.history.flush(30)
                plc.wait(lambda o: bool(o[Out.STATUS] & Status.READY), 10)  # (beating the heartbeat meanwhile)
                plc.set(0x8)  # CLEAR_ERROR: its cause is gone
                plc.wait(lambda o: o[Out.ERROR_CODE] == 0)
                plc.drop(0x8)
                more, refused3 = run_parts(plc, 100, 3)
                assert more == [100, 101, 102] and not refused3
                seen += more
            else:
                assert not refused2 and len(seen2) == BACKLOG + 15
                unrecorded = station.history.unrecorded
                assert unrecorded >= 10  # past the bound of 20 waiting verdicts
                out = plc.outputs()
                assert join_u32(out[Out.UNRECORDED_HI], out[Out.UNRECORDED_LO]) == unrecorded
                assert station.alarms.is_active(ALARM_UNRECORDED)
                ok, text = HmiState(station).history_label()
                assert not ok and f"{unrecorded} verdicts UNRECORDED" in text
                wait_until(lambda: f"{unrecorded} verdicts given without a record"  # the file lags by up to 1 s
                           in check_history_record(station.config).summary, 5)
                assert check_history_record(station.config).status == "warn"
                filler.unlink()
                assert station.history.flush(30)
        finally:
            plc.close()
            station.stop()
        stored = stored_parts(fs)
        if policy == "stop":
            assert stored == sorted(seen), "a verdict the PLC saw is missing from the history"
        else:
            assert len(stored) == len(seen) - unrecorded and set(stored) <= set(seen)
