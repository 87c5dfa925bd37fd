"""The operator's view of a station that started on a corrupt history file (garbage bytes, or a
real database cut short): the alarm says what happened and where the old file went, the line
goes on, its parts count and land in the fresh database."""

from __future__ import annotations

import random
import sqlite3

import pytest

from station.db.writer import ALARM_DB_CORRUPT
from station.app import ALARM_COUNTERS
from tests.hmi.conftest import PASSWORDS, ROLES, login, only, run_parts, simulated_hmi
from tests.hmi.stand import make_station

pytestmark = pytest.mark.asyncio


def _garbage(db):
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(random.Random(11).randbytes(96 * 1024))


def _truncated(db):
    st = make_station(db.parent.parent)
    st.start()
    try:
        run_parts(st, 12)
    finally:
        st.stop()
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)


@pytest.mark.parametrize("spoil", [_garbage, _truncated], ids=["garbage", "truncated"])
async def test_operator_sees_where_the_corrupt_database_went_and_the_line_goes_on(tmp_path, spoil):
    db = tmp_path / "var" / "station.db"
    spoil(db)
    spoilt = db.read_bytes()
    st = make_station(tmp_path)
    st.start()
    try:
        (moved,) = [p for p in db.parent.glob("station.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
        assert moved.read_bytes() == spoilt
        assert not st.alarms.is_active(ALARM_COUNTERS)  # the fresh database was readable
        async with simulated_hmi(st) as (ctx, new_user):
            for name, role in ROLES.items():
                ctx.auth.create_user(name, role, PASSWORDS[name], "test")  # the fresh database takes users too
            user = await login(new_user(), "olga")
            await user.should_see(marker=f"alarm-{ALARM_DB_CORRUPT}", retries=50)
            await user.should_see(f"moved to {moved}", retries=50)
            await user.should_see("0", marker="count-parts", retries=50)

            seq = run_parts(st, 3, first_id=500)
            assert seq == 3
            await user.should_see("3", marker="count-parts", retries=50)
            assert st.history.stats.written == 3 and st.history.stats.lost == 0
            assert not st.alarms.is_active(ALARM_DB_CORRUPT)  # the fresh file works: cleared, still listed
            await user.should_see(marker=f"alarm-{ALARM_DB_CORRUPT}", retries=50)

            user.find(marker=f"ack-{ALARM_DB_CORRUPT}").click()
            assert all(a.key != ALARM_DB_CORRUPT for a in st.alarms.all())  # cleared and acknowledged: gone
            await user.should_not_see(marker=f"alarm-{ALARM_DB_CORRUPT}", retries=50)

            engineer = await login(new_user(), "emil", "/history")  # the history page reads the fresh database
            await engineer.should_see("3 inspections match", retries=50)
            assert sorted(r["part"] for r in only(engineer, "history-table").rows) == [500, 501, 502]
    finally:
        st.stop()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert sorted(r[0] for r in con.execute("SELECT part_id FROM inspections")) == [500, 501, 502]
    finally:
        con.close()
