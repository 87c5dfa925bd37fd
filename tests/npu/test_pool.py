"""One runtime per NPU core: spreading, fallback to fewer cores, failing cores, in-order delivery."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from station.alarms import AlarmBoard
from station.camera.base import Camera
from station.inference import rknn_double
from station.inference.factory import load_model
from station.inference.metadata import ModelError
from station.inference.pool import CoreScheduler, ModelPool
from station.inspection import Outcome, RejectReason, Verdict, View
from station.pipeline import Findings, Pipeline, TriggerRefused
from station.recipe import load_recipe
from tests.npu.conftest import normalise, write_metadata
from station.benchmarks.recipes import threshold_recipe_text


def _pool(models_dir, cls, cores=3, scheduler=None):
    rknn_double.add_simulated_form(models_dir, "tiny", bake_normalization=True)
    return load_model(models_dir, "tiny", f"rknn:{cores}", runtime_class=cls, scheduler=scheduler or CoreScheduler())


def _hammer(model, images, threads=6, per_thread=3):
    errors, outs = [], []

    def work(i):
        for k in range(per_thread):
            try:
                outs.append(model.run({"image": images[(i + k) % len(images)]}))
            except ModelError as exc:
                errors.append(exc)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return outs, errors


def test_three_runtimes_one_per_core_all_used_at_once(models_dir, images):
    cls = rknn_double.simulated(latency_s=0.03, cores=3)
    pool = _pool(models_dir, cls)
    assert isinstance(pool, ModelPool) and pool.core_masks == [1, 2, 4]
    outs, errors = _hammer(pool, images)
    assert not errors and len(outs) == 18
    assert cls.npu.peak_busy == 3  # three inferences ran at the same moment
    assert all(cls.npu.calls_by_core[m] > 0 for m in (1, 2, 4))
    pool.close()


def test_one_core_serialises(models_dir, images):
    cls = rknn_double.simulated(latency_s=0.01, cores=3)
    pool = _pool(models_dir, cls, cores=1)
    outs, errors = _hammer(pool, images, threads=4, per_thread=2)
    assert not errors and len(outs) == 8
    assert cls.npu.peak_busy == 1 and cls.npu.calls_by_core == {1: 8, 2: 0, 4: 0}


def test_pools_of_two_models_share_the_cores(tmp_path, tiny_onnx, images):
    # encoder and decoder of different parts must not be sent to the same core while another idles
    d = tmp_path / "m"
    d.mkdir()
    for name in ("enc", "dec"):
        write_metadata(d, name, tiny_onnx)
        rknn_double.add_simulated_form(d, name, bake_normalization=True)
    cls = rknn_double.simulated(latency_s={"enc": 0.04, "dec": 0.01}, cores=3)
    sched = CoreScheduler()
    enc = load_model(d, "enc", "rknn", runtime_class=cls, scheduler=sched)
    dec = load_model(d, "dec", "rknn", runtime_class=cls, scheduler=sched)
    done = []

    def part(i):
        for _ in range(3):
            enc.run({"image": images[i]})
            dec.run({"image": images[i]})
            done.append(i)

    ts = [threading.Thread(target=part, args=(i,)) for i in range(3)]
    [t.start() for t in ts]
    [t.join(30) for t in ts]
    assert len(done) == 9 and cls.npu.peak_busy == 3
    # no call was ever sent to a busy core while another core stood idle
    assert cls.npu.queued_beside_idle_core == 0


def test_model_too_big_for_every_core_runs_on_fewer(models_dir, images, caplog, monkeypatch):
    from station.inference import pool as pool_module

    events = []
    monkeypatch.setattr(pool_module, "_degraded_listeners", [])
    pool_module.on_degraded(lambda name, msg: events.append(name))
    cls = rknn_double.simulated(faults=rknn_double.Faults(init_cores=frozenset({4})))
    with caplog.at_level(logging.WARNING, logger="station.inference.pool"):
        pool = _pool(models_dir, cls)
    assert pool.core_masks == [1, 2]
    assert "model tiny: runs on 2 of 3 NPU cores" in caplog.text and "core mask 4" in caplog.text
    assert events == ["tiny"]
    assert pool.run({"image": images[0]})["logits"].shape == (1, 4)


def test_no_core_loads_is_a_model_error_with_every_reason(models_dir):
    cls = rknn_double.simulated(faults=rknn_double.Faults(init=True))
    with pytest.raises(ModelError, match=r"model tiny: no NPU runtime could be loaded \(core mask 1: .*core mask 2: .*core mask 4: "):
        _pool(models_dir, cls)


def test_core_failing_mid_run_is_taken_out_and_the_rest_carry_on(models_dir, images, caplog, monkeypatch):
    from station.inference import pool as pool_module

    events = []
    monkeypatch.setattr(pool_module, "_degraded_listeners", [lambda name, msg: events.append((name, msg))])
    cls = rknn_double.simulated(latency_s=0.005, faults=rknn_double.Faults(inference_cores=frozenset({2})))
    pool = _pool(models_dir, cls)
    with caplog.at_level(logging.ERROR, logger="station.inference.pool"):
        outs, errors = _hammer(pool, images, threads=3, per_thread=6)
    assert len(outs) + len(errors) == 18
    assert len(errors) == 3 and all("core mask 2" in str(e) for e in errors)
    assert pool.core_masks == [1, 4]
    assert "core mask 2 failed 3 times in a row; taken out, 2 left" in caplog.text
    assert events == [("tiny", "model tiny: NPU runtime on core mask 2 failed 3 times in a row; taken out, 2 left (masks [1, 4])")]


# ---- through the real pipeline ------------------------------------------------------------

RECIPE = threshold_recipe_text("npu-part", ["scratch"], plc_id=9, budget_ms=20000)


class FrameCamera(Camera):
    """Part n's image is frame n of a fixed set (uint8 RGB)."""

    name = "top"

    def __init__(self, frames):
        self.frames = frames

    def open(self):
        pass

    def close(self):
        pass

    def grab(self, part_id, timeout_s):
        return View(camera="top", image=self.frames[part_id % len(self.frames)][0], frame_id=part_id)


class PooledInspector:
    """One NPU model call per part; parts with id % 3 == 0 take longer afterwards, so they finish out of order."""

    model_hashes: dict = {}

    def __init__(self, model):
        self.model = model

    def preprocess(self, views):
        return views

    def find_defects(self, views):
        logits = self.model.run({"image": views[0].image[None]})["logits"]
        if views[0].frame_id % 3 == 0:
            time.sleep(0.03)
        return Findings(defects=[], scores={"logit0": float(logits[0, 0]), "frame": float(views[0].frame_id)})

    def decide(self, defects):
        return Verdict(Outcome.PASS, "no defect")


def _run_pipeline(tmp_path, model, frames, n_parts):
    path = tmp_path / "npu-part.toml"
    path.write_text(RECIPE)
    alarms = AlarmBoard()
    raised = []
    alarms.subscribe(raised.append)
    pipe = Pipeline({"top": FrameCamera(frames)}, lambda loaded: PooledInspector(model), alarms, inference_workers=3)
    pipe.load_recipe(load_recipe(path))
    got = []
    pipe.sinks = [type("Sink", (), {"publish": lambda self, insp: got.append(insp)})()]
    pipe.start()
    seqs = []
    for pid in range(n_parts):
        while True:
            try:
                seqs.append(pipe.trigger(pid))
                break
            except TriggerRefused:
                time.sleep(0.002)
    assert pipe.wait_published(seqs[-1], 30)
    pipe.stop()
    return got, raised


def test_three_cores_in_flight_results_leave_in_trigger_order(tmp_path, models_dir, images):
    cls = rknn_double.simulated(latency_s=0.04, cores=3)
    pool = _pool(models_dir, cls)
    got, _ = _run_pipeline(tmp_path, pool, images, 15)
    assert [i.sequence for i in got] == list(range(1, 16))
    assert [int(i.scores["frame"]) for i in got] == list(range(15))
    assert all(i.verdict.outcome is Outcome.PASS for i in got)
    assert cls.npu.peak_busy == 3
    # each part's result is its own image's, not a neighbour's
    with load_model(models_dir, "tiny", "onnxruntime", threads=1) as ref:
        for insp in got[:6]:
            want = ref.run({"image": normalise(images[int(insp.scores["frame"]) % len(images)])})["logits"][0, 0]
            assert insp.scores["logit0"] == pytest.approx(float(want), abs=1e-4)


def test_npu_failing_mid_run_rejects_affected_parts_and_station_keeps_running(tmp_path, models_dir, images):
    cls = rknn_double.simulated(latency_s=0.01, cores=3, faults=rknn_double.Faults(inference_cores=frozenset({4})))
    pool = _pool(models_dir, cls)
    got, raised = _run_pipeline(tmp_path, pool, images, 30)
    assert [i.sequence for i in got] == list(range(1, 31))  # one verdict per trigger, in order
    failed = [i for i in got if i.verdict.outcome is Outcome.REJECT]
    assert 1 <= len(failed) <= 3  # the core is taken out after 3 consecutive failures
    for insp in failed:
        assert insp.verdict.reject_reason is RejectReason.MODEL_ERROR
        assert "NPU inference failed on core mask 4" in insp.verdict.reason
        assert insp.verdict.plc_code == 0xFFFF
    assert all(i.verdict.outcome is Outcome.PASS for i in got[-6:])
    assert pool.core_masks == [1, 2]
    assert any(a.key == "part_failed:model_error" and "core mask 4" in a.message for a in raised)
