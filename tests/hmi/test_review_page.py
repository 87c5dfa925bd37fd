"""Review verdicts on the HMI with NiceGUI's simulated user (issue 22): the live view's REVIEW
banner and counter, the review queue, operators flag (and cannot label), engineers label."""

from __future__ import annotations

import pytest
import pytest_asyncio
from sqlalchemy import select

from station.db.labels import LabelStore
from station.db.models import AuditLogRow, InspectionRow
from station.inspection import REVIEW_PLC_CODE, Outcome, Verdict
from tests.hmi.conftest import PASSWORDS, ROLES, login, only, run_parts, simulated_hmi, wait_rendered
from tests.hmi.stand import GroundTruthInspector, make_station

pytestmark = pytest.mark.asyncio


class DoubtfulInspector(GroundTruthInspector):
    """Every defect the simulated camera makes is doubtful: the part goes to REVIEW, as with a
    recipe whose review band holds its findings (station.verdict.decide, tested on its own)."""

    def decide(self, defects):
        if defects:
            return Verdict(Outcome.REVIEW, f"review: {defects[0].class_name} in the review band", None, defects[0], REVIEW_PLC_CODE)
        return Verdict(Outcome.PASS, "no defect")


@pytest_asyncio.fixture
async def reviewing(tmp_path):
    station = make_station(tmp_path, history=True, defect_rate=0.6)
    station.pipeline.build_inspector = DoubtfulInspector
    station.start()
    try:
        async with simulated_hmi(station) as (ctx, new_user):
            for name, role in ROLES.items():
                ctx.auth.create_user(name, role, PASSWORDS[name], "test")
            yield ctx, new_user
    finally:
        station.stop()


def review_ids(ctx) -> list[int]:
    with ctx.engine.connect() as conn:
        return list(conn.scalars(select(InspectionRow.id).where(InspectionRow.outcome == "review").order_by(InspectionRow.id)))


async def test_live_view_shows_review_apart(reviewing):
    ctx, new_user = reviewing
    user = await login(new_user(), "olga")
    seq = run_parts(ctx.station, 8)
    await wait_rendered(ctx, seq)
    c = ctx.state.counters()
    assert c.reviewed > 0 and c.rejected == 0 and c.passed + c.reviewed == 8
    await user.should_see(str(c.reviewed), marker="count-reviewed", retries=50)
    latest = ctx.state.latest()
    await user.should_see("REVIEW" if latest.outcome is Outcome.REVIEW else "PASS", marker="banner", retries=50)


async def test_operator_flags_a_part_and_cannot_label_it(reviewing):
    ctx, new_user = reviewing
    run_parts(ctx.station, 6)
    ids = review_ids(ctx)
    assert ids, "the stand should send some parts to review"
    user = await login(new_user(), "olga", "/review")
    await user.should_see(f"{len(ids)} parts", marker="queue-summary", retries=50)
    await user.open(f"/review/{ids[0]}")
    await user.should_see("REVIEW", marker="label-verdict", retries=50)
    await user.should_not_see(marker="save-label")
    await user.should_not_see(marker="take-findings")
    only(user, "flag-comment").value = "a dark spot the station was unsure of"
    user.find(marker="flag").click()
    await user.should_see("Flagged for a quality engineer by olga.", retries=50)
    items, total = LabelStore(ctx.engine).queue(status="flagged")
    assert total == 1 and items[0].inspection_id == ids[0] and items[0].flagged_by == "olga"
    with ctx.engine.connect() as conn:
        flags = conn.execute(select(AuditLogRow.actor, AuditLogRow.target, AuditLogRow.after)
                             .where(AuditLogRow.action == "review.flag")).all()
    assert [tuple(f) for f in flags] == [("olga", f"inspection {ids[0]}", "a dark spot the station was unsure of")]


async def test_engineer_confirms_with_the_stations_findings(reviewing):
    ctx, new_user = reviewing
    run_parts(ctx.station, 6)
    first = review_ids(ctx)[0]
    user = await login(new_user(), "emil", f"/review/{first}")
    await user.should_see("Not labelled yet.", retries=50)
    user.find(marker="save-label").click()
    await user.should_see("choose: is the part defective or good?", retries=30)  # nothing saved without a decision
    assert LabelStore(ctx.engine).latest(first) is None
    user.find(marker="take-findings").click()
    await user.should_see(marker="region-1", retries=30)
    only(user, "label-truth").value = "pass"
    user.find(marker="save-label").click()
    await user.should_see("a good part has no defects", retries=30)  # regions on a good part are refused
    only(user, "label-truth").value = "reject"
    user.find(marker="save-label").click()
    await user.should_see("Labelled defective by emil", marker="label-status", retries=50)
    label = LabelStore(ctx.engine).latest(first)
    assert label.verdict == "reject" and label.station_outcome == "review" and label.reviewer == "emil"
    assert label.regions and all(r.source == "station" and r.mask_rle for r in label.regions)
    assert label.sam_model == ""  # nothing was outlined by SAM
