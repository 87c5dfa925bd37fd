"""A tiny camera and inspector for PLC tests: plain Python implementing the station's interfaces.

The camera returns a 4×4 frame stamped with the part ID; the inspector rejects the part IDs it
is told are defective (class "scratch", PLC code 3) and can stall named parts past their budget.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from station.camera.base import Camera, CameraError
from station.inspection import Defect, Outcome, RejectReason, Verdict, View
from station.pipeline import Findings




class TinyCamera(Camera):
    name = "top"

    def __init__(self, fail_parts=()):
        self.fail_parts = set(fail_parts)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def grab(self, part_id: int, timeout_s: float) -> View:
        if part_id in self.fail_parts:
            raise CameraError(f"camera top: no frame for part {part_id}")
        return View(camera="top", image=np.zeros((4, 4), np.uint8), frame_id=part_id)


class TinyInspector:
    """``decide`` sees only the defects (as the real one): the part being decided is remembered
    per thread by ``find_defects`` (a part's analyse and decide run in one thread)."""

    model_hashes: dict = {}

    def __init__(self, defective=(), stall_s: dict | None = None, undecidable=()):
        self.defective = set(defective)
        self.stall_s = stall_s or {}  # part_id -> seconds spent in find_defects
        self.undecidable = set(undecidable)  # part IDs whose decide() raises
        self._current = threading.local()

    def preprocess(self, views: list[View]) -> list[View]:
        return views

    def find_defects(self, views: list[View]) -> Findings:
        part = views[0].frame_id
        self._current.part = part
        if part in self.stall_s:
            time.sleep(self.stall_s[part])
        defects = []
        if part in self.defective:
            defects.append(Defect(view="top", class_name="scratch", confidence=0.875, box=(0, 0, 2, 2), area_px=4))
        return Findings(defects=defects, scores={})

    def decide(self, defects: list[Defect]) -> Verdict:
        if self._current.part in self.undecidable:
            raise ValueError("rule table inconsistent")
        if defects:
            return Verdict(Outcome.REJECT, "scratch", RejectReason.DEFECT, top_defect=defects[0], plc_code=3)
        return Verdict(Outcome.PASS, "no defect")
