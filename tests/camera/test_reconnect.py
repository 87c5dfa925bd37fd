"""Loss and recovery, through the real pipeline: a simulated unplug (the acquirer destroyed under
a running grab loop), an outage while another holder keeps the device, repeated timeouts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from station.camera.base import CameraError
from station.inspection import Defect, Outcome, RejectReason, Verdict
from station.pipeline import Findings, Pipeline
from station.recipe import LoadedRecipe, Recipe, RecipeCamera

from .conftest import FAST


class FrameCheckInspector:
    """The vision side reduced to what this test needs: PASS when every view holds a real frame
    (an empty or flat view, or a missing one, is an "empty" defect)."""

    model_hashes: dict = {}

    def preprocess(self, views):
        return views

    def find_defects(self, views):
        bad = [v.camera for v in views if not (v.image.size and v.image.std() > 0)]
        if len(views) != 2:
            bad.append(views[0].camera if views else "top")
        return Findings(defects=[Defect(cam, "empty", 1.0, (0, 0, 1, 1), 1) for cam in bad], scores={})

    def decide(self, defects):
        if defects:
            return Verdict(Outcome.REJECT, "empty view", RejectReason.DEFECT, defects[0], plc_code=1)
        return Verdict(Outcome.PASS, "ok")


class Collector:
    def __init__(self):
        self.items = []

    def publish(self, inspection):
        self.items.append(inspection)


def unplug(camera) -> None:
    """The simulated unplug: destroy the camera's acquirer from another thread, under its grab loop.

    It lands between two fetches (the producers' exclusive section waits for the one in
    flight): harvesters crashes the process when an acquirer is destroyed during a fetch.
    """
    with camera.producers.exclusive():
        camera._ia.destroy()


def two_camera_recipe() -> LoadedRecipe:
    recipe = Recipe.model_validate({
        "name": "two-views", "plc_id": 7, "time_budget_ms": 2000,
        "cameras": [{"name": "top", "trigger": "freerun", "features": FAST},
                    {"name": "side", "trigger": "freerun", "features": {**FAST, "PixelFormat": "RGBa8"}}],
        "vision": {"analyzer": "threshold", "blobs": [{"class": "scratch", "polarity": "dark"}]},
        "classes": [{"name": "scratch", "plc_code": 1}],
    })
    return LoadedRecipe(recipe=recipe, path=Path("two-views.toml"), text="", content_hash="test")


@pytest.fixture
def station_pipeline(open_camera, alarms):
    cams = {"top": open_camera("0", name="top", reconnect_backoff_ms=[150, 300]),
            "side": open_camera("1", name="side", reconnect_backoff_ms=[150, 300])}
    pipeline = Pipeline(cams, lambda loaded: FrameCheckInspector(), alarms, queue_depth=8)
    sink = Collector()
    pipeline.sinks = [sink]
    pipeline.load_recipe(two_camera_recipe())
    pipeline.start()
    yield pipeline, cams, sink
    pipeline.stop()


def test_two_camera_part_keeps_both_views(station_pipeline):
    pipeline, cams, sink = station_pipeline
    seq = pipeline.trigger(part_id=11)
    assert pipeline.wait_published(seq, 5.0)
    insp = sink.items[-1]
    assert insp.verdict.outcome is Outcome.PASS, insp.verdict
    assert [v.camera for v in insp.views] == ["top", "side"]
    assert insp.views[0].image.shape == (120, 160) and insp.views[1].image.shape == (120, 160, 3)
    # the recipe's features reached both devices through Pipeline.load_recipe → configure
    assert cams["side"].report.applied["PixelFormat"] == "RGBa8"


def test_unplug_under_running_pipeline_rejects_then_recovers(station_pipeline, alarms, producers):
    pipeline, cams, sink = station_pipeline
    stop = threading.Event()
    triggered = []

    def feed():
        part = 0
        while not stop.is_set():
            part += 1
            try:
                triggered.append(pipeline.trigger(part_id=part))
            except Exception:
                pass
            time.sleep(0.02)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        time.sleep(0.3)
        top = cams["top"]
        unplug(top)
        holder = producers.create_acquirer(top.device)  # and the device stays "away" while held
        deadline = time.monotonic() + 5
        while not alarms.is_active("camera_lost:top") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert alarms.is_active("camera_lost:top")
        time.sleep(0.5)  # several reconnect attempts fail while the device is held
        assert not top.connected
        holder.destroy()  # plugged back in
        deadline = time.monotonic() + 5
        while alarms.is_active("camera_lost:top") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alarms.is_active("camera_lost:top") and top.connected
        time.sleep(0.3)
    finally:
        stop.set()
        feeder.join()
    assert pipeline.wait_published(triggered[-1], 5.0)
    verdicts = [(i.verdict.outcome, i.verdict.reject_reason) for i in sink.items]
    rejects = [v for v in verdicts if v[0] is Outcome.REJECT]
    assert rejects and all(r == (Outcome.REJECT, RejectReason.CAMERA_ERROR) for r in rejects)
    # passes before the unplug and after the recovery, none in between without a frame
    first_reject = verdicts.index(rejects[0])
    last_reject = len(verdicts) - 1 - verdicts[::-1].index(rejects[-1])
    assert all(v[0] is Outcome.PASS for v in verdicts[:first_reject])
    assert verdicts[last_reject + 1:] and all(v[0] is Outcome.PASS for v in verdicts[last_reject + 1:])
    assert cams["top"].counters.reconnects == 1 and cams["top"].counters.losses == 1
    assert cams["side"].counters.losses == 0  # the other camera was never disturbed


def test_repeated_timeouts_declare_the_device_lost_and_recovery_applies_the_new_settings(open_camera, alarms):
    cam = open_camera("0", features={**FAST, "AcquisitionFrameRate": 1.0}, timeout_ms=150,
                      lost_after_timeouts=2, reconnect_backoff_ms=[300])
    for part in (1, 2):
        with pytest.raises(CameraError, match=f"timeout waiting for the frame of part {part}"):
            cam.grab(part, timeout_s=5.0)
    assert cam.counters.timeouts == 2
    lost = next(a for a in alarms.active() if a.key == "camera_lost:top")
    assert "2 in a row" in lost.message
    with pytest.raises(CameraError, match="camera top is down"):
        cam.grab(3, 1.0)
    cam.configure(RecipeCamera(name="top", trigger="freerun", features=FAST))  # kept for the reconnect
    deadline = time.monotonic() + 5
    while not cam.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cam.connected and not alarms.is_active("camera_lost:top")
    assert cam.grab(4, 1.0).image.shape == (120, 160)


def test_destroy_under_a_plain_grab_loop_recovers_by_itself(open_camera, alarms):
    cam = open_camera("0", reconnect_backoff_ms=[100])
    ok, errors, stop = [], [], threading.Event()

    def loop():
        part = 0
        while not stop.is_set():
            part += 1
            try:
                ok.append(cam.grab(part, 0.5).frame_id)
            except CameraError as exc:
                errors.append(str(exc))
                time.sleep(0.01)

    t = threading.Thread(target=loop)
    t.start()
    try:
        for _ in range(3):
            time.sleep(0.3)
            before = len(ok)
            unplug(cam)
            deadline = time.monotonic() + 5
            while len(ok) < before + 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(ok) >= before + 5, errors[-3:]
    finally:
        stop.set()
        t.join()
    assert cam.counters.losses == 3 and cam.counters.reconnects == 3
    assert errors and not alarms.is_active("camera_lost:top")


def test_re_enumeration_while_another_camera_grabs_reopens_it_quietly(open_camera, producers, alarms):
    # a reconnecting camera re-enumerates devices, which destroys every acquirer: the guard keeps
    # that out of a fetch in flight (a crash otherwise), and the other camera reopens by itself
    cam = open_camera("0", timeout_ms=5000)
    frames, errors, stop = [], [], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                frames.append(cam.grab(len(frames), 5.0).frame_id)  # generous: reopening under CI load
            except CameraError as exc:
                errors.append(str(exc))

    t = threading.Thread(target=loop)
    t.start()
    try:
        for _ in range(5):
            time.sleep(0.1)
            producers.refresh()
        after = len(frames)
        deadline = time.monotonic() + 5
        while len(frames) < after + 10 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join()
    assert errors == [] and len(frames) >= after + 10
    assert cam.counters.losses == 0 and not alarms.is_active("camera_lost:top")


def test_a_camera_that_failed_to_open_comes_up_by_itself(viky_cti, producers, alarms):
    # the station keeps running with an alarm when one camera cannot open; when the device
    # becomes free the camera connects without anyone calling open() again
    from station.camera.genicam import GenicamCamera
    from station.config import GenicamCameraConfig

    producers.ensure([viky_cti])
    holder = producers.create_acquirer(producers.find("2"))
    cam = GenicamCamera(GenicamCameraConfig(name="side", cti=[viky_cti], device="2", reconnect_backoff_ms=[100]),
                        alarms, producers)
    try:
        with pytest.raises(CameraError, match="cannot open device '2'"):
            cam.open()
        assert alarms.is_active("camera_lost:side")
        with pytest.raises(CameraError, match="camera side is down"):
            cam.grab(1, 0.5)
        holder.destroy()
        deadline = time.monotonic() + 5
        while not cam.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cam.connected and not alarms.is_active("camera_lost:side")
        cam.configure(RecipeCamera(name="side", trigger="freerun", features=FAST))
        assert cam.grab(2, 1.0).image.shape == (120, 160)
    finally:
        cam.close()
