"""Counters and per-stage latency of the running station (for the HMI, the PLC and summaries)."""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

from station.counters import PartCounters
from station.inspection import Inspection, Outcome


class StationStats:
    """Since the process started (or the PLC's last RESET_COUNTERS): parts, pass, reject, review
    (counted apart from rejects), reasons, classes and latency; ``shift`` holds the operator's
    counters of the current shift (``station.counters``)."""

    def __init__(self, window: int = 2000, *, shift: PartCounters | None = None):
        self._lock = threading.Lock()
        self.shift = shift if shift is not None else PartCounters()
        self.parts = 0
        self.passed = 0
        self.rejected = 0
        self.reviewed = 0  # REVIEW verdicts: diverted for a person, not counted as rejects
        self.refused = 0
        self.late_results = 0
        self.reject_reasons: Counter[str] = Counter()
        self.reject_classes: Counter[str] = Counter()
        self._latency: dict[str, deque[float]] = {}
        self._window = window

    def record(self, insp: Inspection) -> None:
        with self._lock:
            self.parts += 1
            if insp.verdict and insp.verdict.outcome is Outcome.PASS:
                self.passed += 1
            elif insp.verdict and insp.verdict.outcome is Outcome.REVIEW:
                self.reviewed += 1
            else:
                self.rejected += 1
                v = insp.verdict
                self.reject_reasons[(v.reject_reason.value if v and v.reject_reason else "defect")] += 1
                if v and v.top_defect is not None:
                    self.reject_classes[v.top_defect.class_name] += 1
            for stage, ms in insp.timings_ms.items():
                self._latency.setdefault(stage, deque(maxlen=self._window)).append(ms)
        self.shift.record(insp)

    def count_refused(self) -> None:
        with self._lock:
            self.refused += 1

    def count_late(self) -> None:
        with self._lock:
            self.late_results += 1

    def reset(self) -> None:
        """The PLC's RESET_COUNTERS: these counters and the operator's shift counters start again."""
        with self._lock:
            self.parts = self.passed = self.rejected = self.reviewed = 0
            self.reject_reasons.clear()
            self.reject_classes.clear()
        self.shift.reset()

    def latency(self) -> dict[str, dict[str, float]]:
        """Per stage: p50, p99 and mean in ms over the recent window."""
        with self._lock:
            out = {}
            for stage, values in self._latency.items():
                arr = np.asarray(values)
                out[stage] = {
                    "p50": round(float(np.percentile(arr, 50)), 2),
                    "p99": round(float(np.percentile(arr, 99)), 2),
                    "mean": round(float(arr.mean()), 2),
                    "n": int(arr.size),
                }
            return out

    @property
    def yield_pct(self) -> float:
        return 100.0 * self.passed / self.parts if self.parts else 0.0

    def snapshot(self) -> dict:
        with self._lock:
            base = {
                "parts": self.parts,
                "pass": self.passed,
                "reject": self.rejected,
                "review": self.reviewed,
                "refused": self.refused,
                "late_results": self.late_results,
                "reject_reasons": dict(self.reject_reasons),
                "reject_classes": dict(self.reject_classes),
            }
        base["yield_pct"] = round(self.yield_pct, 2)
        base["latency_ms"] = self.latency()
        return base
