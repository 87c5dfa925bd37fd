"""Pipeline: one verdict per trigger, trigger order, fail-safe REJECT with reason and alarm."""

from __future__ import annotations

import threading
import time

import pytest

from station.alarms import AlarmBoard
from station.inspection import Outcome, RejectReason
from station.pipeline import Pipeline, TriggerRefused
from station.recipe import load_recipe
from tests.core.helpers import ScriptedCamera, ScriptedInspector
from station.benchmarks.recipes import threshold_recipe_text

def recipe_text(budget: int) -> str:
    return threshold_recipe_text("widget", ["scratch"], plc_id=7, budget_ms=budget)


class Collector:
    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    def publish(self, insp):
        with self.lock:
            self.items.append(insp)


def make(tmp_path, inspector, camera=None, budget=1000, workers=1, depth=4):
    path = tmp_path / "widget.toml"
    path.write_text(recipe_text(budget))
    alarms = AlarmBoard()
    pipe = Pipeline({"top": camera or ScriptedCamera()}, lambda loaded: inspector, alarms, queue_depth=depth, inference_workers=workers)
    pipe.load_recipe(load_recipe(path))
    out = Collector()
    pipe.sinks = [out]
    pipe.start()
    return pipe, alarms, out


def trigger_waiting(pipe, pid):
    """Offer a part until the station takes it (like a conveyor that holds the part)."""
    while True:
        try:
            return pipe.trigger(pid)
        except TriggerRefused:
            time.sleep(0.002)


def run_parts(pipe, part_ids, timeout=20):
    seqs = [trigger_waiting(pipe, pid) for pid in part_ids]
    assert pipe.wait_published(seqs[-1], timeout)
    return seqs


def test_pass_and_reject_in_trigger_order(tmp_path):
    pipe, alarms, out = make(tmp_path, ScriptedInspector(defective={2, 5}))
    try:
        run_parts(pipe, [1, 2, 3, 4, 5, 6])
    finally:
        pipe.stop()
    assert [i.part_id for i in out.items] == [1, 2, 3, 4, 5, 6]
    assert [i.verdict.outcome for i in out.items] == [Outcome.PASS, Outcome.REJECT, Outcome.PASS, Outcome.PASS, Outcome.REJECT, Outcome.PASS]
    assert out.items[1].verdict.plc_code == 1
    assert not alarms.active()
    assert set(out.items[0].timings_ms) >= {"acquire", "preprocess", "analyse", "decide", "total"}


@pytest.mark.parametrize(
    "stage,reason",
    [("preprocess", RejectReason.PREPROCESS_ERROR), ("analyse", RejectReason.MODEL_ERROR), ("decide", RejectReason.DECISION_ERROR)],
)
def test_exception_in_a_stage_rejects_that_part_only(tmp_path, stage, reason):
    pipe, alarms, out = make(tmp_path, ScriptedInspector(fail={2: stage}))
    try:
        run_parts(pipe, [1, 2, 3])
    finally:
        pipe.stop()
    v = [i.verdict for i in out.items]
    assert [x.outcome for x in v] == [Outcome.PASS, Outcome.REJECT, Outcome.PASS]
    assert v[1].reject_reason is reason and v[1].plc_code == 0xFFFF
    assert "injected failure" in v[1].reason
    assert alarms.raised_total == 1
    # the next good part clears the alarm's cause; it waits for acknowledgement
    (alarm,) = alarms.all()
    assert alarm.key == f"part_failed:{reason.value}" and not alarm.active and not alarm.acknowledged


def test_camera_failure_rejects_with_camera_error(tmp_path):
    pipe, alarms, out = make(tmp_path, ScriptedInspector(), camera=ScriptedCamera(fail_parts={2}))
    try:
        run_parts(pipe, [1, 2, 3])
    finally:
        pipe.stop()
    assert [i.verdict.outcome for i in out.items] == [Outcome.PASS, Outcome.REJECT, Outcome.PASS]
    assert out.items[1].verdict.reject_reason is RejectReason.CAMERA_ERROR
    assert "frame timeout" in out.items[1].verdict.reason
    assert alarms.raised_total == 1


@pytest.mark.parametrize("stage", ["preprocess", "analyse", "decide"])
def test_stage_overrunning_the_budget_is_a_timeout_reject_at_the_deadline(tmp_path, stage):
    pipe, alarms, out = make(tmp_path, ScriptedInspector(sleep={2: (stage, 1.5)}), budget=250)
    try:
        s1 = pipe.trigger(1)
        s2 = pipe.trigger(2)
        t2 = time.monotonic()
        assert pipe.wait_published(s2, 5)
        published_after = time.monotonic() - t2
        time.sleep(max(0.0, 1.6 - (time.monotonic() - t2)))  # the slow stage finishes; its late result must be dropped
        s3 = pipe.trigger(3)
        assert pipe.wait_published(s3, 5)
    finally:
        pipe.stop()
    assert [i.sequence for i in out.items] == [s1, s2, s3]  # exactly one verdict each
    assert out.items[1].verdict.reject_reason is RejectReason.TIMEOUT
    assert out.items[1].verdict.plc_code == 0xFFFF
    assert published_after < 1.2  # decided at its deadline (250 ms), not when the stage ended (1.5 s)
    assert out.items[2].verdict.outcome is Outcome.PASS
    assert alarms.is_active("part_failed:timeout") is False and alarms.raised_total == 1
    assert pipe.stats.late_results == 1


def test_results_leave_in_trigger_order_under_concurrency(tmp_path):
    # three analyse workers; early parts are slow, so later ones finish first
    insp = ScriptedInspector(defective={3, 7, 11}, sleep={p: ("analyse", 0.15 if p % 3 == 1 else 0.0) for p in range(1, 31)}, analyse_s=0.01)
    pipe, _, out = make(tmp_path, insp, workers=3, depth=8, budget=5000)
    try:
        seqs = [trigger_waiting(pipe, pid) for pid in range(1, 31)]
        assert pipe.wait_published(seqs[-1], 20)
    finally:
        pipe.stop()
    assert [i.sequence for i in out.items] == seqs
    assert [i.part_id for i in out.items] == list(range(1, 31))
    assert insp.max_concurrent >= 2  # parts really were analysed concurrently
    assert {i.part_id for i in out.items if i.verdict.outcome is Outcome.REJECT} == {3, 7, 11}


def test_acquisition_of_next_part_overlaps_analysis(tmp_path):
    spans = {}  # (stage, part) -> (start, end), time.monotonic()

    class TimedCamera(ScriptedCamera):
        def grab(self, part_id, timeout_s):
            t = time.monotonic()
            view = super().grab(part_id, timeout_s)
            spans[("acquire", part_id)] = (t, time.monotonic())
            return view

    class TimedInspector(ScriptedInspector):
        def find_defects(self, views):
            t = time.monotonic()
            found = super().find_defects(views)
            spans[("analyse", int(views[0].image[0, 0]))] = (t, time.monotonic())
            return found

    cam = TimedCamera(slow_parts={p: 0.1 for p in range(1, 7)})
    pipe, _, out = make(tmp_path, TimedInspector(analyse_s=0.1), camera=cam, budget=10_000)
    try:
        run_parts(pipe, range(1, 7))
    finally:
        pipe.stop()
    assert len(out.items) == 6
    # part n+1 was being grabbed while part n was being analysed (structure, not speed)
    overlaps = [
        n for n in range(1, 6)
        if spans[("acquire", n + 1)][0] < spans[("analyse", n)][1] and spans[("analyse", n)][0] < spans[("acquire", n + 1)][1]
    ]
    assert overlaps, spans


def test_full_queue_refuses_trigger_and_never_loses_accepted_parts(tmp_path):
    pipe, _, out = make(tmp_path, ScriptedInspector(analyse_s=0.2), depth=1, budget=10_000)
    accepted, refused = [], 0
    try:
        for pid in range(1, 10):
            try:
                accepted.append(pipe.trigger(pid))
            except TriggerRefused as exc:
                assert exc.reason is RejectReason.OVERRUN
                refused += 1
        assert pipe.wait_published(accepted[-1], 20)
    finally:
        pipe.stop()
    assert refused > 0 and pipe.stats.refused == refused
    assert [i.sequence for i in out.items] == accepted


def test_offline_and_unloaded_station_refuse_triggers(tmp_path):
    pipe = Pipeline({"top": ScriptedCamera()}, lambda loaded: ScriptedInspector(), AlarmBoard())
    pipe.start()
    try:
        with pytest.raises(TriggerRefused) as err:
            pipe.trigger(1)
        assert err.value.reason is RejectReason.NO_RECIPE
        path = tmp_path / "w.toml"
        path.write_text(recipe_text(100))
        pipe.load_recipe(load_recipe(path))
        pipe.online.set_offline("plc", True)
        with pytest.raises(TriggerRefused):
            pipe.trigger(1)
    finally:
        pipe.stop()


def test_bad_recipe_at_run_time_is_refused_and_running_recipe_stays(tmp_path):
    pipe, _, out = make(tmp_path, ScriptedInspector())
    try:
        other = tmp_path / "other.toml"
        other.write_text(recipe_text(100).replace('"widget"', '"other"').replace('name = "top"', 'name = "side"'))
        with pytest.raises(ValueError, match="side"):
            pipe.load_recipe(load_recipe(other))
        assert pipe.recipe.loaded.recipe.name == "widget"
        run_parts(pipe, [1])
    finally:
        pipe.stop()
    assert out.items[0].recipe_name == "widget" and out.items[0].verdict.passed


def test_failing_sink_does_not_stop_other_sinks(tmp_path):
    class Broken:
        def publish(self, insp):
            raise OSError("disk full")

    pipe, alarms, out = make(tmp_path, ScriptedInspector())
    pipe.sinks = [Broken(), *pipe.sinks]
    try:
        run_parts(pipe, [1, 2])
    finally:
        pipe.stop()
    assert len(out.items) == 2
    assert alarms.is_active("sink_failed:Broken")
