"""The history writer as a real pipeline sink: the demo station (simulated camera, real vision,
no PLC) inspects parts and every verdict lands in SQLite exactly as the pipeline published it."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from station.db.models import InspectionRow
from station.app import Station
from station.demo import demo_config
from station.inspection import RejectReason


class Recorder:
    """A second sink keeping what the pipeline published (the objects, not summaries)."""

    def __init__(self):
        self.inspections = []

    def publish(self, inspection):
        self.inspections.append(inspection)


def test_every_published_verdict_is_in_the_history(tmp_path, demo_models):
    recorder = Recorder()
    station = Station(demo_config(tmp_path), plc=False, sinks=[recorder])
    station.start()
    writer = station.history  # Station.stop() lets go of it
    try:
        seqs = []
        while len(seqs) < 24:
            try:
                seqs.append(station.pipeline.trigger(part_id=500 + len(seqs)))
            except Exception:
                time.sleep(0.02)  # queue full: offer the part again
        assert station.pipeline.wait_published(seqs[-1], 120)
        assert writer.flush(30)
    finally:
        station.stop()
    published = {i.sequence: i for i in recorder.inspections}
    assert sorted(published) == seqs
    with Session(writer.engine) as s:
        rows = s.scalars(select(InspectionRow).options(selectinload(InspectionRow.defects), selectinload(InspectionRow.images))).all()
        assert sorted(r.sequence for r in rows) == seqs
        assert {r.outcome for r in rows} == {"pass", "reject"}, "the demo line should give both verdicts"
        assert any(r.images for r in rows)
        for r in rows:
            insp = published[r.sequence]
            assert (r.part_id, r.outcome, r.reason, r.plc_code, r.station_id) == (
                insp.part_id, insp.verdict.outcome.value, insp.verdict.reason, insp.verdict.plc_code, "demo")
            assert [d.class_name for d in r.defects] == [d.class_name for d in insp.defects]
            assert r.recipe_hash == insp.recipe_hash and r.recipe_name == "demo-part"
            if r.outcome == "reject":  # the default image policy archives every reject …
                # … or, when the queued images outgrow their memory bound (a loaded machine: seen
                # once in a full run), stores the verdict without them and counts them as dropped;
                # a part whose budget ran out before its image was acquired has none to archive
                # (a loaded machine: seen once in make test-fast beside a training run)
                not_acquired = not insp.views and insp.failure is not None and insp.failure.reason is RejectReason.TIMEOUT
                assert {i.kind for i in r.images} >= {"raw"} or r.images_dropped > 0 or not_acquired, (
                    r.sequence, r.images_dropped, r.reason)
                if not_acquired:
                    assert not r.images and r.reason == insp.verdict.reason
                for img in r.images:
                    assert (tmp_path / "var" / "images" / img.path).stat().st_size == img.bytes
    assert writer.stats.lost == 0 and writer.stats.written == len(seqs)
    assert writer.stats.images_dropped == sum(r.images_dropped for r in rows)  # every dropped image is counted
