"""Plain data that flows through the pipeline: views in, defects and a verdict out.

Coordinates are image pixels of the view they belong to, origin top-left, x to the right,
y down. Boxes are (x0, y0, x1, y1) with x1/y1 exclusive. Times are milliseconds unless a
name says otherwise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Outcome(str, enum.Enum):
    PASS = "pass"
    REJECT = "reject"


class RejectReason(str, enum.Enum):
    """Why a part was rejected without a defect being the cause (fail-safe reasons)."""

    DEFECT = "defect"
    TIMEOUT = "timeout"
    CAMERA_ERROR = "camera_error"
    PREPROCESS_ERROR = "preprocess_error"
    MODEL_ERROR = "model_error"
    DECISION_ERROR = "decision_error"
    NO_RECIPE = "no_recipe"
    OVERRUN = "overrun"
    SHUTDOWN = "shutdown"


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


@dataclass
class Defect:
    """A named defect region on one view."""

    view: str
    class_name: str
    confidence: float
    box: tuple[int, int, int, int]
    area_px: int
    mask: np.ndarray | None = None  # bool HxW in the view's frame
    area_mm2: float | None = None
    proposal_score: float = 0.0
    zone: str | None = None

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
    reason: str
    reject_reason: RejectReason | None = None
    top_defect: Defect | None = None
    plc_code: int = 0  # 0 pass, 1..N class code, 0xFFFF no valid result

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @classmethod
    def failsafe(cls, reason: RejectReason, detail: str) -> "Verdict":
        return cls(Outcome.REJECT, f"{reason.value}: {detail}", reject_reason=reason, plc_code=0xFFFF)


@dataclass
class Inspection:
    """Everything known about one triggered part; exactly one per trigger."""

    sequence: int
    part_id: int
    recipe: str
    recipe_version: int
    triggered_at_s: float  # time.time() at trigger (UTC epoch seconds)
    deadline_s: float  # time.monotonic() deadline
    views: list[View] = field(default_factory=list)
    defects: list[Defect] = field(default_factory=list)
    verdict: Verdict | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    recipe_hash: str = ""
    model_hashes: dict[str, str] = field(default_factory=dict)
    overlay: np.ndarray | None = None
    error: str | None = None

    @property
    def total_ms(self) -> float:
        return sum(self.timings_ms.values())

    def summary(self) -> dict:
        v = self.verdict
        return {
            "sequence": self.sequence,
            "part_id": self.part_id,
            "recipe": self.recipe,
            "verdict": v.outcome.value if v else None,
            "reason": v.reason if v else None,
            "defects": [d.to_dict() for d in self.defects],
            "timings_ms": {k: round(t, 2) for k, t in self.timings_ms.items()},
            # ground truth, known only for simulated / replayed parts
            "truth": [view.truth_class for view in self.views] if any(view.truth_class for view in self.views) else None,
        }
