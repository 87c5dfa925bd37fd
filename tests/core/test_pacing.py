"""The demo paces parts to what the machine can inspect, and a time budget the recipe cannot
meet on this machine is an alarm from the start (issue: on a loaded 2-core machine every part
of a replayed tile recipe became a timeout reject because parts were fed faster than inspected)."""

from __future__ import annotations

import shutil

from station.app import ALARM_BUDGET, Station
from station.config import StationConfig
from station.demo import Conveyor, VerdictRecorder, run_headless
from tests.conftest import REPO_ROOT
from tests.core.helpers import ScriptedCamera, ScriptedInspector
from tests.core.test_pipeline import make


def test_a_paced_line_gets_no_timeout_rejects_where_an_unpaced_one_does(tmp_path):
    # analysis 0.3 s, budget 0.5 s: two parts waiting behind one another already miss it
    for paced, expect_timeouts in ((None, True), (1, False)):
        inspector = ScriptedInspector(analyse_s=0.3)
        (tmp_path / f"p{paced}").mkdir()
        pipe, _, out = make(tmp_path / f"p{paced}", inspector, ScriptedCamera(), budget=500)
        try:
            conveyor = Conveyor(pipe, 0.0, max_in_flight=paced)
            conveyor.run(6)
            assert pipe.wait_published(conveyor.triggered[-1], 30)
        finally:
            pipe.stop()
        reasons = [i.verdict.reject_reason.value if i.verdict.reject_reason else "pass" for i in out.items]
        assert ("timeout" in reasons) is expect_timeouts, (paced, reasons)
        if paced:
            assert inspector.max_concurrent == 1 and reasons == ["pass"] * 6


def test_a_budget_the_recipe_cannot_meet_here_is_an_alarm_at_start(tmp_path):
    shutil.copytree(REPO_ROOT / "recipes", tmp_path / "recipes")
    recipe = tmp_path / "recipes" / "plate-threshold.toml"
    recipe.write_text(recipe.read_text().replace("time_budget_ms = 5000", "time_budget_ms = 1"))
    config = StationConfig.embedded(tmp_path, active_recipe="plate-threshold", plc={"enabled": False}, hmi={"enabled": False})
    with Station(config, history=False) as st:
        assert st.measured_part_ms is not None and st.measured_part_ms > 1
        (alarm,) = [a for a in st.alarms.active() if a.key == ALARM_BUDGET]
        assert "over its time budget of 1 ms" in alarm.message and "timeout rejects" in alarm.message
    recipe.write_text(recipe.read_text().replace("time_budget_ms = 1", "time_budget_ms = 60000"))
    recorder = VerdictRecorder()
    with Station(config, history=False, sinks=[recorder]) as st:
        assert not st.alarms.is_active(ALARM_BUDGET)
        results = run_headless(st.pipeline, recorder, 3, max_in_flight=st.pipeline.inference_workers)
    assert len(results) == 3  # the warm-up parts are not published: only the three triggered ones
