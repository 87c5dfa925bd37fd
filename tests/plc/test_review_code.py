"""A REVIEW verdict reaches the PLC as REJECT with the review result code (issue 22): over
loopback with the real PlcService, the recipe's own rules (station.verdict.decide) deciding."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from station.inspection import REVIEW_PLC_CODE, Defect, Inspection, Outcome, Verdict, View
from station.pipeline import Findings
from station.plc.registers import NO_RESULT, REVIEW, Out, Status, format_map
from station.plc.service import PlcService
from station.recipe import LoadedRecipe, Recipe
from station.verdict import decide
from tests.plc.conftest import part_id_of
from tests.plc.parts import TinyInspector

BANDED = Recipe.model_validate({
    "name": "widget", "plc_id": 7, "time_budget_ms": 2000, "min_confidence": 0.5, "review_at": 0.2,
    "cameras": [{"name": "top"}], "vision": {"analyzer": "threshold", "blobs": [{"class": "dent", "polarity": "dark"}]},
    "classes": [{"name": "dent", "plc_code": 2}, {"name": "scratch", "plc_code": 3}],
})


class BandInspector(TinyInspector):
    """A scratch of the confidence given per part ID; the verdict from the banded recipe's rules."""

    def __init__(self, confidences: dict[int, float]):
        super().__init__()
        self.confidences = confidences

    def find_defects(self, views: list[View]) -> Findings:
        conf = self.confidences.get(views[0].frame_id)
        found = [] if conf is None else [Defect("top", "scratch", conf, (0, 0, 2, 2), 4)]
        return Findings(defects=found, scores={})

    def decide(self, defects: list[Defect]) -> Verdict:
        return decide(defects, BANDED)


def status(out) -> Status:
    return Status(out[Out.STATUS])


def test_review_part_reaches_the_plc_as_reject_with_the_review_code(make_rig):
    rig = make_rig(inspector=BandInspector({1: 0.35, 2: 0.9, 3: 0.1}))
    plc = rig.master()
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.READY))
    answers = {}
    for pid in (1, 2, 3):
        plc.trigger(pid)
        answers[pid] = plc.take_result()
    review, reject, good = answers[1], answers[2], answers[3]
    assert part_id_of(review) == 1 and review[Out.RESULT_CODE] == REVIEW == 0xFFFD
    assert status(review) & Status.REJECT and not status(review) & Status.PASS  # a PLC ignoring the code still rejects
    assert review[Out.TOP_CLASS] == 3 and review[Out.TOP_CONFIDENCE] == 350 and review[Out.ERROR_CODE] == 0
    assert reject[Out.RESULT_CODE] == 3 and status(reject) & Status.REJECT
    assert good[Out.RESULT_CODE] == 0 and status(good) & Status.PASS
    # the PLC's counters: 3 inspected, 2 diverted (the review among them); the station counts apart
    assert good[Out.INSPECTED_HI:Out.REJECTED_LO + 1] == [0, 3, 0, 2]
    assert (rig.stats.passed, rig.stats.rejected, rig.stats.reviewed) == (1, 1, 1)
    day = rig.stats.shift.snapshot()
    assert (day.parts, day.passed, day.rejected, day.reviewed) == (3, 1, 1, 1)


def _inspection(verdict: Verdict, defects=()) -> Inspection:
    loaded = LoadedRecipe(recipe=BANDED, path="widget.toml", text="", content_hash="x")
    insp = Inspection(1, 1, loaded, 0.0, float("inf"), views=[View("top", np.zeros((4, 4), np.uint8))])
    insp.defects, insp.verdict = list(defects), verdict
    return insp


@settings(max_examples=200, deadline=None)
@given(code=st.integers(0, 0xFFFF), confidence=st.floats(0, 1), with_top=st.booleans())
def test_pass_is_never_signalled_for_a_review_verdict(code, confidence, with_top):
    """Whatever code or top defect a REVIEW verdict carries, the PLC gets REJECT, never PASS."""
    top = Defect("top", "scratch", confidence, (0, 0, 2, 2), 4) if with_top else None
    result = PlcService._to_plc_result(None, _inspection(Verdict(Outcome.REVIEW, "review", None, top, code), [top] if top else []))
    assert not result.passed
    assert result.result_code == (NO_RESULT if code == NO_RESULT else REVIEW)
    assert result.top_class == (3 if top is not None else 0)  # the doubtful finding's class


def test_review_result_code_is_in_the_printed_map():
    text = format_map()
    assert "result codes (register 106" in text and "0xFFFD" in text and "divert for manual inspection" in text
    assert REVIEW_PLC_CODE == REVIEW
