"""The model the HMI pages observe: station status, latest result with its overlay, counters, alarms.

Kept apart from the pages so that every browser shows the same thing and the model can be
tested without one. It is fed by the pipeline as a result sink (``publish``) and by the
alarm board (``AlarmBoard.subscribe``). ``publish`` only hands the inspection to a renderer
thread through a small bounded mailbox, so the line never waits for the HMI; the renderer
draws the overlay and encodes JPEGs once per part, whatever the number of browsers. Under
overload the renderer skips to the newest parts (``skipped`` counts them); the counters are
the station's (``station.stats.shift``, see ``station.counters``): they count every part, go on
across HMI mounts and station restarts, and follow the PLC's counter reset.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from dataclasses import dataclass, field

from station.hmi.overlay import encode_jpeg
from station.alarms import Alarm
from station.counters import ShiftCounters
from station.inspection import Inspection, Outcome
from station.online import OPERATOR, PLC
from station.vision.overlay import as_rgb

log = logging.getLogger("hmi.state")


class StationStatus(str, enum.Enum):
    READY = "READY"
    BUSY = "BUSY"
    OFFLINE = "OFFLINE"


@dataclass(frozen=True)
class LiveResult:
    """One published part, as the operator sees it. Times: UTC epoch seconds and ms."""

    sequence: int
    part_id: int
    recipe: str
    recipe_version: int
    outcome: Outcome
    reason: str
    defects: tuple[dict, ...]
    triggered_at_s: float
    total_ms: float
    image_jpeg: bytes = field(repr=False, default=b"")
    thumb_jpeg: bytes = field(repr=False, default=b"")

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS


class HmiState:
    """Observable state for all browsers. Thread-safe; ``publish`` never blocks."""

    def __init__(self, station, *, strip_length: int = 12, max_side_px: int = 1024, jpeg_quality: int = 80,
                 thumb_px: int = 160, mailbox: int = 4):
        self.station = station
        self.strip_length = strip_length
        self.max_side_px = max_side_px
        self.jpeg_quality = jpeg_quality
        self.thumb_px = thumb_px
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._mailbox: collections.deque[Inspection] = collections.deque(maxlen=mailbox)
        self._strip: collections.deque[LiveResult] = collections.deque(maxlen=strip_length)
        self.version = 0  # bumps when a new result is shown
        self.alarm_version = 0  # bumps on every alarm change
        self.received = 0
        self.rendered = 0
        self.skipped = 0
        self._running = False
        self._thread: threading.Thread | None = None
        station.alarms.subscribe(self._on_alarm)

    # ---- feeding ------------------------------------------------------------------------
    def publish(self, inspection: Inspection) -> None:
        """ResultSink: queue the part for rendering (drops the oldest if full). The pipeline
        counts it in ``station.stats`` before any sink sees it."""
        with self._wake:
            self.received += 1
            if len(self._mailbox) == self._mailbox.maxlen:
                self.skipped += 1
            self._mailbox.append(inspection)
            self._wake.notify()

    def _on_alarm(self, alarm: Alarm) -> None:
        with self._lock:
            self.alarm_version += 1

    # ---- rendering thread ---------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._thread = threading.Thread(target=self._render_loop, name="hmi-render", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _render_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._mailbox or not self._running)
                if not self._running:
                    return
                insp = self._mailbox.popleft()
            try:
                result = self.render(insp)
            except Exception:  # a bad image must not stop the live view
                log.exception("HMI could not render part seq %s", insp.sequence)
                result = self._result(insp, b"", b"")
            with self._lock:
                self._strip.append(result)
                self.rendered += 1
                self.version += 1

    def render(self, insp: Inspection) -> LiveResult:
        """Overlay + JPEG (display size) + thumbnail for one inspection."""
        image = b""
        thumb = b""
        # the overlay was drawn once, with the part's own recipe (station.stages); a part whose
        # overlay could not be drawn shows its raw view
        if insp.overlay is not None:
            rgb = insp.overlay
        elif insp.views:
            rgb = as_rgb(insp.views[0].image)
        else:
            rgb = None
        if rgb is not None:
            image = encode_jpeg(rgb, self.max_side_px, self.jpeg_quality)
            thumb = encode_jpeg(rgb, self.thumb_px, 70)
        return self._result(insp, image, thumb)

    @staticmethod
    def _result(insp: Inspection, image: bytes, thumb: bytes) -> LiveResult:
        v = insp.verdict
        return LiveResult(
            sequence=insp.sequence,
            part_id=insp.part_id,
            recipe=insp.recipe_name,
            recipe_version=insp.recipe_version,
            outcome=v.outcome if v else Outcome.REJECT,
            reason=v.reason if v else "no verdict",
            defects=tuple(d.to_dict() for d in insp.defects),
            triggered_at_s=insp.triggered_at_s,
            total_ms=insp.timings_ms.get("total", insp.total_ms),
            image_jpeg=image,
            thumb_jpeg=thumb,
        )

    # ---- reading (pages) ----------------------------------------------------------------
    def latest(self) -> LiveResult | None:
        with self._lock:
            return self._strip[-1] if self._strip else None

    def strip(self) -> list[LiveResult]:
        """The last results, newest first."""
        with self._lock:
            return list(reversed(self._strip))

    def result(self, sequence: int) -> LiveResult | None:
        with self._lock:
            return next((r for r in self._strip if r.sequence == sequence), None)

    def counters(self) -> ShiftCounters:
        """The operator's counters of the current period (the current shift, or since the last reset)."""
        return self.station.stats.shift.snapshot()

    def shift_zone(self):
        """The time zone of the shift calendar (the counters' times are shown in it)."""
        return self.station.stats.shift.plan.zone()

    def status(self) -> StationStatus:
        """OFFLINE: not started or taken offline; BUSY: parts in flight; else READY."""
        st = self.station
        pipeline = st.pipeline
        if not getattr(st, "started", True) or pipeline.offline or not pipeline.running:
            return StationStatus.OFFLINE
        return StationStatus.BUSY if pipeline.in_flight else StationStatus.READY

    def online_label(self) -> tuple[bool, str]:
        """(online, text): ONLINE, or OFFLINE with who holds the station offline (station.online)."""
        switch = self.station.pipeline.online
        held = switch.requests()
        if not held:
            return True, "ONLINE"
        who = {OPERATOR: lambda r: f"by {r.by}", PLC: lambda r: "by the PLC (SET_OFFLINE)"}
        return False, "OFFLINE " + ", ".join(who.get(r.source, lambda r: f"by {r.by}")(r) for r in held)

    def alarms(self) -> list[Alarm]:
        return self.station.alarms.all()

    def recipe_label(self) -> str:
        active = self.station.pipeline.recipe
        if active is None:
            return "no recipe"
        r = active.loaded.recipe
        return f"{r.name} v{r.version}"

    def plc_label(self) -> tuple[bool | None, str]:
        """(online, text); online is None when the station runs without a PLC link."""
        plc = getattr(self.station, "plc", None)
        if plc is None:
            return None, "PLC: not configured"
        try:
            snap = plc.snapshot()  # station.plc.service.PlcService
        except Exception as exc:  # the banner must still render
            return False, f"PLC: status unknown ({type(exc).__name__})"
        online = bool(snap.get("plc_online")) and snap.get("connected", True)
        text = f"PLC: {'online' if online else 'OFFLINE'} ({snap.get('mode', '?')} {snap.get('address', '')})"
        if snap.get("error_code"):
            text += f" · {snap.get('error')}"
        return online, text

    def history_label(self) -> tuple[bool | None, str]:
        """(ok, text) about the verdicts' records; ok is None when the station keeps no history."""
        history = getattr(self.station, "history", None)
        if history is None:
            return None, "History: off"
        refusing = history.refusal()
        if refusing:
            return False, f"History: FULL, parts refused ({history.backlog} waiting)"
        unrecorded = history.unrecorded
        if unrecorded:
            return False, f"History: {unrecorded} verdicts UNRECORDED"
        return True, f"History: ok ({history.backlog} waiting)" if history.backlog else "History: ok"

    def cameras(self) -> list[tuple[str, bool]]:
        return [(name, bool(cam.connected)) for name, cam in self.station.cameras.items()]

    def backend_label(self) -> str:
        label = getattr(self.station, "backend_label", None) or getattr(self.station, "backend", "")
        return str(label)

    def snapshot_time(self) -> float:
        return time.time()
