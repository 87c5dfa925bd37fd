"""One path switches the line's recipe (station.recipe_switch): the station's start-up, the PLC's
LOAD_RECIPE over real Modbus and the HMI's "run on the line" all go through it, with the same
failure handling (the running recipe stays, an alarm, an exception) and the same audit rows."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from station.app import Station
from station.config import StationConfig
from station.db.models import AuditLogRow
from station.plc.registers import Control, ErrorCode, Out, Status
from station.recipe_switch import ALARM_SWITCH, RecipeLoadFailed, RecipeUnknown
from tests.conftest import REPO_ROOT
from tests.plc.conftest import PlcMaster, free_port


@pytest.fixture
def station(tmp_path):
    shutil.copytree(REPO_ROOT / "recipes", tmp_path / "recipes")
    config = StationConfig.embedded(tmp_path, active_recipe="plate-threshold", hmi={"enabled": False},
                                    plc={"enabled": True, "mode": "server", "host": "127.0.0.1", "port": free_port()})
    st = Station(config)
    st.start()
    yield st
    st.stop()


def audit_rows(st: Station) -> list[tuple[str, str, str, str | None, str | None]]:
    with Session(st.history.engine) as s:
        rows = s.scalars(select(AuditLogRow).order_by(AuditLogRow.id)).all()
    return [(r.actor, r.action, r.target, r.before, r.after) for r in rows]


def test_start_up_hmi_and_plc_switch_through_one_audited_path(station):
    st = station
    assert audit_rows(st) == [("station", "recipe.switch (start-up)", "plate-threshold", None, "plate-threshold v1")]
    # the HMI's way (hmi.recipe_versions.RecipeEditor.run_on_line calls this)
    with pytest.raises(RecipeUnknown, match="no recipe named 'nope'"):
        st.switch_recipe("nope", actor="emil", via="HMI")
    assert st.alarms.is_active(ALARM_SWITCH) and st.pipeline.recipe.loaded.recipe.name == "plate-threshold"
    # a recipe that exists but cannot run here: its models are not in the models directory
    with pytest.raises(RecipeLoadFailed, match="steel-strip v1 cannot be loaded: .*station models pull"):
        st.switch_recipe("steel-strip", actor="emil", via="HMI")
    assert st.pipeline.recipe.loaded.recipe.name == "plate-threshold"
    # the PLC's way: LOAD_RECIPE with a PLC ID, over Modbus
    plc = PlcMaster(st.config.plc.port)
    try:
        plc.client.write_register(1, 20, device_id=1)  # steel-strip's plc_id: same failure, same audit
        plc.set(Control.LOAD_RECIPE)
        failed = plc.wait(lambda o: bool(o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED)))
        assert Status(failed[Out.STATUS]) & Status.CMD_FAILED and failed[Out.ERROR_CODE] == ErrorCode.RECIPE_LOAD_FAILED
        plc.drop(Control.LOAD_RECIPE)
        plc.wait(lambda o: not o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED))
        plc.client.write_register(1, 2, device_id=1)  # plate-threshold again: fine, and the alarm clears
        plc.set(Control.LOAD_RECIPE)
        done = plc.wait(lambda o: bool(o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED)))
        assert Status(done[Out.STATUS]) & Status.CMD_DONE and done[Out.ACTIVE_RECIPE] == 2
    finally:
        plc.close()
    assert not st.alarms.is_active(ALARM_SWITCH)
    rows = audit_rows(st)[1:]
    assert [(actor, action, target, before) for actor, action, target, before, _ in rows] == [
        ("emil", "recipe.switch_failed (HMI)", "nope", "plate-threshold v1"),
        ("emil", "recipe.switch_failed (HMI)", "steel-strip", "plate-threshold v1"),
        ("plc", "recipe.switch_failed (LOAD_RECIPE)", "plc_id 20", "plate-threshold v1"),
        ("plc", "recipe.switch (LOAD_RECIPE)", "plate-threshold", "plate-threshold v1"),
    ]
    assert "cannot be loaded" in rows[2][4] and rows[3][4] == "plate-threshold v1"


def test_the_station_wires_the_record_first_then_the_plc(station):
    st = station
    # no HMI in this station; the verdict's durable record (journal) before the PLC hears it
    assert st.pipeline.sinks == (st.history, st.plc)
    assert st.pipeline.record_keeper is st.history
