"""Small plain-Python stand-ins for the vision side, to test the pipeline's own logic.

They are not mocks of hardware: they implement the Inspector protocol with scripted
behaviour (raise in a stage, sleep past the budget) so each fail-safe path can be driven.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from station.camera.base import Camera, CameraError
from station.inspection import Defect, Outcome, RejectReason, Verdict, View
from station.pipeline import Findings


class ScriptedCamera(Camera):
    """Returns a small frame whose pixel [0,0] encodes the part id; can fail or stall per part."""

    def __init__(self, name: str = "top", fail_parts=(), slow_parts: dict | None = None):
        self.name = name
        self.fail_parts = set(fail_parts)
        self.slow_parts = slow_parts or {}
        self.grabs = 0

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def grab(self, part_id: int, timeout_s: float) -> View:
        self.grabs += 1
        if part_id in self.fail_parts:
            raise CameraError(f"camera {self.name}: frame timeout")
        time.sleep(self.slow_parts.get(part_id, 0))
        img = np.zeros((8, 8), np.uint8)
        img[0, 0] = part_id % 256
        return View(camera=self.name, image=img, frame_id=part_id)


class ScriptedInspector:
    """Rejects parts whose id is in ``defective``; raises or sleeps in the named stage per part id.

    ``decide`` sees only the defects (as the real one): the part id of the part being decided is
    remembered per thread by ``find_defects`` (a part's analyse and decide run in one thread)."""

    model_hashes: dict = {}

    def __init__(self, defective=(), fail: dict | None = None, sleep: dict | None = None, analyse_s: float = 0.0):
        self.defective = set(defective)
        self.fail = fail or {}  # part_id -> stage name
        self.sleep = sleep or {}  # part_id -> (stage, seconds)
        self.analyse_s = analyse_s
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()
        self._current = threading.local()

    def _maybe(self, stage: str, part_id: int) -> None:
        if self.fail.get(part_id) == stage:
            raise RuntimeError(f"injected failure in {stage}")
        st, secs = self.sleep.get(part_id, (None, 0))
        if st == stage:
            time.sleep(secs)

    def preprocess(self, views: list[View]) -> list[View]:
        self._maybe("preprocess", int(views[0].image[0, 0]))
        return views

    def find_defects(self, views: list[View]) -> Findings:
        part = int(views[0].image[0, 0])
        self._current.part = part
        with self._lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            time.sleep(self.analyse_s)
            self._maybe("analyse", part)
        finally:
            with self._lock:
                self.concurrent -= 1
        defects = []
        if part in self.defective:
            defects.append(Defect(view=views[0].camera, class_name="scratch", confidence=0.9, box=(1, 1, 4, 4), area_px=9))
        return Findings(defects=defects, scores={"max_score": 0.9 if defects else 0.1})

    def decide(self, defects: list[Defect]) -> Verdict:
        self._maybe("decide", self._current.part)
        if defects:
            return Verdict(Outcome.REJECT, "scratch 9 px > 0 px", RejectReason.DEFECT, top_defect=defects[0], plc_code=1)
        return Verdict(Outcome.PASS, "no defect")
