"""Review labels and the review queue (db.labels) on real SQLite files and PostgreSQL (issue 22):
REVIEW verdicts stored and counted apart, labels with RLE masks, who / when / which models,
audited; the queue's filters; the reviewed parts training reads; the 0001 -> 0002 migration."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import func, select, text

from history_testkit import make_inspection
from station.alarms import AlarmBoard
from station.config import ArchiveConfig, DatabaseConfig
from station.db.engine import make_engine
from station.db.filters import HistoryFilter
from station.db.labels import LabelError, LabelStore, Region
from station.db.migrate import downgrade, upgrade
from station.db.models import AuditLogRow, InspectionRow
from station.db.queries import HistoryQueries
from station.db.writer import HistoryWriter
from station.inspection import REVIEW_PLC_CODE, Outcome, Verdict

T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.timezone.utc)


def review_of(insp):
    """The same part as a REVIEW verdict (its first defect doubtful)."""
    insp.verdict = Verdict(Outcome.REVIEW, "review: scratch in the band", None, insp.defects[0], REVIEW_PLC_CODE)
    return insp


@pytest.fixture
def history(db_url, tmp_path):
    """A written history: part 1 pass (image kept), 2 reject, 3 review, 4 pass without image; engine."""
    engine = make_engine(db_url)
    writer = HistoryWriter(DatabaseConfig(url=db_url), ArchiveConfig(dir=tmp_path / "images"), AlarmBoard(), "st-1", engine=engine)
    keep_first_pass = iter([True])  # the image policy keeps the first pass (a sampled one), not the second
    writer._wants_images = lambda outcome, recipe: outcome != "pass" or next(keep_first_pass, False)
    writer.start()
    parts = [make_inspection(1, when=T0, reject=False), make_inspection(2, when=T0 + dt.timedelta(minutes=1), reject=True),
             review_of(make_inspection(3, when=T0 + dt.timedelta(minutes=2), reject=True)),
             make_inspection(4, when=T0 + dt.timedelta(minutes=3), reject=False)]
    for p in parts:
        writer.publish(p)
    assert writer.flush(10)
    writer.close()
    yield engine
    engine.dispose()


def ids_by_part(engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {p: i for i, p in conn.execute(select(InspectionRow.id, InspectionRow.part_id))}


def test_review_verdicts_are_stored_and_counted_apart(history):
    q = HistoryQueries(history)
    assert [r["outcome"] for r in q.page(HistoryFilter(), limit=10).items] == ["pass", "review", "reject", "pass"]
    review = q.page(HistoryFilter(verdict="review"), limit=10).items
    assert [r["part_id"] for r in review] == [3] and review[0]["plc_code"] == REVIEW_PLC_CODE
    assert review[0]["reject_reason"] is None
    (hour,) = q.yield_by_hour(HistoryFilter())
    assert (hour.total, hour.passed, hour.rejected, hour.reviewed) == (4, 2, 1, 1)
    assert sum(s.reviewed for s in q.yield_by_shift(HistoryFilter())) == 1


def test_label_with_sam_mask_is_stored_with_who_what_and_audited(history):
    ids = ids_by_part(history)
    store = LabelStore(history)
    mask = np.zeros((48, 64), bool)
    mask[10:20, 12:30] = True
    mask[10, 12] = False
    label = store.save(ids[3], "reject", [Region("top", "crack", (12, 10, 30, 20), mask, "sam")], "emil",
                       comment="hairline crack", sam_model="litemedsam 2f1e3c")
    assert label.verdict == "reject" and label.station_outcome == "review" and not label.agrees
    assert label.reviewer == "emil" and label.sam_model == "litemedsam 2f1e3c" and label.comment == "hairline crack"
    assert label.recipe_name == "demo-part" and label.recipe_version == 1 and label.model_hashes == {"segmentation": "cd" * 32}
    assert abs(label.at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)
    (region,) = label.regions
    assert region.class_name == "crack" and region.source == "sam" and region.mask_rle.startswith("10 18 0 1 ")
    assert np.array_equal(region.mask((48, 64)), mask)
    assert label.class_name == "crack"
    # a second label supersedes the first; both are audited, the second with the first as "before"
    store.save(ids[3], "pass", [], "qe-lead")
    assert store.latest(ids[3]).verdict == "pass" and store.latest(ids[3]).regions == []
    with history.connect() as conn:
        audit = conn.execute(select(AuditLogRow.actor, AuditLogRow.action, AuditLogRow.target, AuditLogRow.before, AuditLogRow.after)
                             .order_by(AuditLogRow.id)).all()
    assert [(a.actor, a.action, a.target) for a in audit] == [("emil", "label.save", f"inspection {ids[3]}"),
                                                              ("qe-lead", "label.save", f"inspection {ids[3]}")]
    assert '"crack"' in audit[0].after and audit[1].before == audit[0].after and '"pass"' in audit[1].after


@pytest.mark.parametrize("verdict, regions, message", [
    ("maybe", [], "verdict must be one of pass, reject"),
    ("reject", [], "needs at least one outlined defect"),
    ("pass", [Region("top", "crack", (1, 1, 5, 5), None, "box")], "a good part has no defects"),
    ("reject", [Region("top", "crack", (5, 5, 5, 9), None, "box")], "x0 < x1"),
    ("reject", [Region("top", "<script>", (1, 1, 5, 5), None, "box")], "letters, digits"),
    ("reject", [Region("top", "crack", (1, 1, 5, 5), None, "magic")], "region source"),
])
def test_bad_labels_are_refused_with_the_reason_and_store_nothing(history, verdict, regions, message):
    store = LabelStore(history)
    with pytest.raises(LabelError, match=message):
        store.save(ids_by_part(history)[2], verdict, regions, "emil")
    with pytest.raises(LabelError, match="no inspection 999999"):
        store.save(999999, "pass", [], "emil")
    with history.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM part_labels")) == 0
        assert conn.scalar(select(func.count()).select_from(AuditLogRow)) == 0


def test_queue_lists_parts_with_images_newest_first_with_filters(history):
    ids = ids_by_part(history)
    store = LabelStore(history)
    items, total = store.queue()
    assert [i.part_id for i in items] == [3, 2, 1] and total == 3  # part 4 has no archived image
    assert [i.outcome for i in items] == ["review", "reject", "pass"] and all(i.label is None for i in items)
    assert [i.part_id for i in store.queue(verdicts=("review", "reject"))[0]] == [3, 2]
    store.flag(ids[1], "olga", "looks scratched to me")
    store.save(ids[2], "reject", [Region("top", "stain", (0, 0, 8, 8), None, "box")], "emil")
    assert [i.part_id for i in store.queue(status="flagged")[0]] == [1]
    assert store.queue(status="flagged")[0][0].flagged_by == "olga"
    assert [i.part_id for i in store.queue(status="labelled")[0]] == [2]
    assert [i.part_id for i in store.queue(status="unlabelled")[0]] == [3, 1]
    assert [i.part_id for i in store.queue(limit=1, offset=1)[0]] == [2]
    with pytest.raises(LabelError, match="status"):
        store.queue(status="done")
    with pytest.raises(LabelError, match="verdicts"):
        store.queue(verdicts=("maybe",))


def test_reviewed_parts_carry_their_images_and_latest_label(history):
    ids = ids_by_part(history)
    store = LabelStore(history)
    store.save(ids[3], "reject", [Region("top", "crack", (1, 2, 9, 12), None, "box")], "emil")
    store.save(ids[1], "pass", [], "emil")
    store.save(ids[4], "pass", [], "emil")  # labelled, but no image archived: not usable
    parts = store.reviewed_parts("demo-part")
    assert [p.part_id for p in parts] == [1, 3]
    assert all(set(p.images) == {"top"} and p.images["top"].endswith(".png") for p in parts)
    assert parts[1].label.class_name == "crack" and parts[1].group == "st-1:3"
    assert store.reviewed_parts("demo-part", since=T0 + dt.timedelta(minutes=2))[0].part_id == 3
    assert store.reviewed_parts("other") == []


def test_migration_0002_upgrades_a_0001_history_and_downgrades_cleanly(db_url, tmp_path):
    engine = make_engine(db_url)
    upgrade(engine, "0001")
    writer = HistoryWriter(DatabaseConfig(url=db_url), ArchiveConfig(dir=tmp_path / "images"), AlarmBoard(), "st-1", engine=engine)
    writer._try_migrate = lambda raise_too_new: True  # write at 0001, as an older station did
    writer._migrated = True
    writer.start()
    writer.publish(make_inspection(1, when=T0, reject=True))
    assert writer.flush(10)
    writer.close()
    assert upgrade(engine) == ("0001", "0002")
    ids = ids_by_part(engine)
    LabelStore(engine).save(ids[1], "pass", [], "emil")
    downgrade(engine, "0001")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(InspectionRow)) == 1
        names = set(engine.dialect.get_table_names(conn))
    assert not names & {"part_labels", "label_regions", "recipe_validations"}
    engine.dispose()
