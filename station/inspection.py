"""Plain data that flows through the pipeline: views in, defects and a verdict out.

Coordinates are image pixels of the view they belong to, origin top-left, x to the right,
y down. Boxes are (x0, y0, x1, y1) with x1/y1 exclusive. Times are milliseconds unless a
name says otherwise.

An ``Inspection`` handed to the result sinks (PLC, history, HMI) is complete: it carries the
recipe exactly as it was loaded for that part, the verdict, the overlay drawn once, and when
the part could not be inspected a typed ``Failure``. Sinks read it; none of them looks a
recipe up or draws again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from station.recipe import LoadedRecipe


class Outcome(str, enum.Enum):
    """PASS: good. REJECT: a defect, or not inspected (fail-safe). REVIEW: a finding in the
    recipe's review band and none that rejects; physically diverted like a reject (the PLC
    gets REJECT with ``REVIEW_PLC_CODE``) for a person to look at. Never a pass."""

    PASS = "pass"
    REJECT = "reject"
    REVIEW = "review"


class RejectReason(str, enum.Enum):
    """Why a part was rejected: a defect, or a fail-safe reason (the part was not inspected)."""

    DEFECT = "defect"
    TIMEOUT = "timeout"
    CAMERA_ERROR = "camera_error"
    IMAGE_ERROR = "image_error"
    PREPROCESS_ERROR = "preprocess_error"
    MODEL_ERROR = "model_error"
    DECISION_ERROR = "decision_error"
    NO_RECIPE = "no_recipe"
    OVERRUN = "overrun"
    SHUTDOWN = "shutdown"
    HISTORY_FULL = "history_full"  # a trigger refused: the verdict could not be recorded (on_history_full = "stop")


NO_RESULT_PLC_CODE = 0xFFFF  # a part that was not inspected: reject, never a class code
# a REVIEW verdict: "divert for manual inspection"; sent with the REJECT bit, so a PLC program
# that does not know this code still rejects the part
REVIEW_PLC_CODE = 0xFFFD


@dataclass(frozen=True)
class Failure:
    """Why a part could not be inspected: its verdict is a fail-safe REJECT with this reason."""

    reason: RejectReason
    detail: str
    stage: str = ""

    def __post_init__(self) -> None:
        if self.reason is RejectReason.DEFECT:
            raise ValueError("a defect is a finding, not a failure")

    @property
    def text(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class View:
    """One image of a part from one camera (or one lighting).

    ``image`` is uint8, either HxW (mono) or HxWx3 in RGB order.
    ``ground_truth`` is set only by simulated/replay cameras: class name -> bool mask HxW.
    """

    camera: str
    image: np.ndarray
    frame_id: int = 0
    timestamp_s: float = 0.0
    source: str = ""
    ground_truth: dict[str, np.ndarray] | None = None
    truth_class: str | None = None


@dataclass(frozen=True)
class Defect:
    """A named defect region on one view.

    ``zone``, ``area_mm2`` and ``counted_area_px`` (its area inside the recipe's inspected
    region) are set by ``station.verdict.locate`` before the verdict is decided.
    """

    view: str
    class_name: str
    confidence: float
    box: tuple[int, int, int, int]
    area_px: int
    mask: np.ndarray | None = None  # bool HxW in the view's frame
    area_mm2: float | None = None
    proposal_score: float = 0.0
    zone: str | None = None
    counted_area_px: int | None = None

    def to_dict(self) -> dict:
        return {
            "view": self.view,
            "class": self.class_name,
            "confidence": round(float(self.confidence), 4),
            "box": [int(v) for v in self.box],
            "area_px": int(self.area_px),
            "area_mm2": None if self.area_mm2 is None else round(float(self.area_mm2), 4),
            "proposal_score": round(float(self.proposal_score), 4),
            "zone": self.zone,
        }


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str  # for people: "crack 3.1 mm² > 0.5 mm² in zone A", "timeout: budget exceeded …"
    reject_reason: RejectReason | None = None
    top_defect: Defect | None = None
    plc_code: int = 0  # 0 pass, 1..N class code, 0xFFFD review, 0xFFFF no valid result

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def for_review(self) -> bool:
        """A part sent to a person: a finding in the review band, none that rejects."""
        return self.outcome is Outcome.REVIEW

    @property
    def failsafe(self) -> bool:
        """A reject because the part was not inspected (not because of a defect)."""
        return self.reject_reason is not None and self.reject_reason is not RejectReason.DEFECT

    @classmethod
    def for_failure(cls, failure: Failure) -> "Verdict":
        return cls(Outcome.REJECT, failure.text, reject_reason=failure.reason, plc_code=NO_RESULT_PLC_CODE)


@dataclass
class Inspection:
    """Everything known about one triggered part; exactly one per trigger."""

    sequence: int
    part_id: int
    recipe: LoadedRecipe  # exactly as loaded for this part
    triggered_at_s: float  # time.time() at trigger (UTC epoch seconds)
    deadline_s: float  # time.monotonic() deadline
    started_s: float = 0.0  # time.monotonic() at trigger
    views: list[View] = field(default_factory=list)
    defects: list[Defect] = field(default_factory=list)
    verdict: Verdict | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    model_hashes: dict[str, str] = field(default_factory=dict)
    overlay: np.ndarray | None = None
    failure: Failure | None = None

    @property
    def recipe_name(self) -> str:
        return self.recipe.recipe.name

    @property
    def recipe_version(self) -> int:
        return self.recipe.recipe.version

    @property
    def recipe_hash(self) -> str:
        return self.recipe.content_hash

    @property
    def total_ms(self) -> float:
        return self.timings_ms.get("total", sum(self.timings_ms.values()))

    def summary(self) -> dict:
        v = self.verdict
        return {
            "sequence": self.sequence,
            "part_id": self.part_id,
            "recipe": self.recipe_name,
            "recipe_version": self.recipe_version,
            "verdict": v.outcome.value if v else None,
            "reason": v.reason if v else None,
            "failure": None if self.failure is None else {"reason": self.failure.reason.value, "stage": self.failure.stage,
                                                          "detail": self.failure.detail},
            "defects": [d.to_dict() for d in self.defects],
            "timings_ms": {k: round(t, 2) for k, t in self.timings_ms.items()},
            # ground truth, known only for simulated / replayed parts
            "truth": [view.truth_class for view in self.views] if any(view.truth_class for view in self.views) else None,
        }
