"""How one part is inspected: preprocess → analyse (find defects) → decide, then completed.

The pipeline runs these stages in its own threads (station.pipeline); ``inspect_views`` runs
the same stage functions in a row for `station inspect`, `station eval` and `station bench`,
so what they report is what the line does. A stage that raises becomes the part's ``Failure``
(its reason from ``STAGE_FAILURE``, or from the exception: ``StageFailure``, ``ImageError``);
a part past its deadline is not worked on further. ``complete`` turns a part into the result
the sinks receive: a fail-safe verdict when it failed, the overlay (drawn once), the total time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from station.images import ImageError
from station.inspection import Defect, Failure, Inspection, RejectReason, Verdict, View
from station.recipe import LoadedRecipe
from station.vision.overlay import render_overlay

log = logging.getLogger("station.stages")

STAGE_FAILURE = {
    "acquire": RejectReason.CAMERA_ERROR,
    "preprocess": RejectReason.PREPROCESS_ERROR,
    "analyse": RejectReason.MODEL_ERROR,
    "decide": RejectReason.DECISION_ERROR,
}


@dataclass
class Findings:
    defects: list[Defect]  # located on their views (station.verdict.locate)
    scores: dict[str, float] = field(default_factory=dict)


class Inspector(Protocol):
    """The vision side of one recipe: built once per recipe, called per part, from several
    threads at once (nothing in it may change per call)."""

    model_hashes: dict[str, str]

    def preprocess(self, views: list[View]) -> list[View]: ...

    def find_defects(self, views: list[View]) -> Findings: ...

    def decide(self, defects: list[Defect]) -> Verdict: ...


class StageFailure(Exception):
    """A stage's own failure with the reason it gives (e.g. a camera error during acquire)."""

    def __init__(self, reason: RejectReason, detail: str):
        self.reason = reason
        super().__init__(detail)


def run_stage(insp: Inspection, name: str, fn: Callable[[], None]) -> None:
    """Run one stage of ``insp`` (timed in ``timings_ms[name]``) unless it already failed or is
    past its deadline; an exception becomes the part's Failure."""
    if insp.failure is not None:
        return
    if time.monotonic() > insp.deadline_s:
        insp.failure = Failure(RejectReason.TIMEOUT, f"budget exceeded before {name}", name)
        return
    t = time.perf_counter()
    try:
        fn()
    except StageFailure as exc:
        insp.failure = Failure(exc.reason, str(exc), name)
    except ImageError as exc:
        insp.failure = Failure(RejectReason.IMAGE_ERROR, str(exc), name)
    except Exception as exc:
        log.exception("part %s stage %s failed", insp.sequence, name)
        insp.failure = Failure(STAGE_FAILURE[name], f"{name} failed: {type(exc).__name__}: {exc}", name)
    finally:
        insp.timings_ms[name] = (time.perf_counter() - t) * 1000.0


def preprocess(insp: Inspection, inspector: Inspector) -> None:
    def stage() -> None:
        insp.views = inspector.preprocess(insp.views)

    run_stage(insp, "preprocess", stage)


def analyse(insp: Inspection, inspector: Inspector) -> None:
    def stage() -> None:
        findings = inspector.find_defects(insp.views)
        insp.defects = list(findings.defects)
        insp.scores.update(findings.scores)

    run_stage(insp, "analyse", stage)


def decide(insp: Inspection, inspector: Inspector) -> None:
    """The verdict, and the overlay with its banner (what the archive and the HMI show)."""

    def stage() -> None:
        verdict = inspector.decide(insp.defects)
        insp.overlay = draw_overlay(insp, verdict)
        insp.verdict = verdict
        insp.model_hashes.update(inspector.model_hashes)

    run_stage(insp, "decide", stage)


def draw_overlay(insp: Inspection, verdict: Verdict):
    if not insp.views:
        return None
    first = insp.views[0]
    return render_overlay(first.image, insp.defects, insp.recipe.recipe, verdict, first.camera)


def complete(insp: Inspection) -> Inspection:
    """Make ``insp`` the complete result: a part that failed (or has no verdict) gets the
    fail-safe REJECT and no defects; the overlay is drawn for it here (once); total time."""
    if insp.failure is None and insp.verdict is None:
        insp.failure = Failure(RejectReason.DECISION_ERROR, "no verdict", "decide")
    if insp.failure is not None:
        insp.defects = []
        insp.verdict = Verdict.for_failure(insp.failure)
        try:
            insp.overlay = draw_overlay(insp, insp.verdict)
        except Exception:  # a view the renderer cannot draw must not cost the part its verdict
            log.exception("part %s: no overlay", insp.sequence)
            insp.overlay = None
    if insp.started_s:
        insp.timings_ms["total"] = (time.monotonic() - insp.started_s) * 1000.0
    return insp


def inspect_views(loaded: LoadedRecipe, inspector: Inspector, views: list[View], *, sequence: int = 1,
                  part_id: int = 0) -> Inspection:
    """One part through preprocess → analyse → decide → complete, in this thread, with no deadline."""
    now = time.monotonic()
    insp = Inspection(sequence, part_id, loaded, time.time(), float("inf"), started_s=now, views=list(views))
    preprocess(insp, inspector)
    analyse(insp, inspector)
    decide(insp, inspector)
    return complete(insp)


__all__ = ["Findings", "Inspector", "StageFailure", "STAGE_FAILURE", "run_stage", "preprocess", "analyse", "decide",
           "complete", "inspect_views"]
