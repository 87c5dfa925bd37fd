"""trigger → acquire → preprocess → analyse (segment + classify) → decide → publish.

Each stage runs in its own thread(s) joined by bounded queues, so acquisition of part n+1
overlaps analysis of part n. The publisher delivers results strictly in trigger order and
enforces each part's time budget: a part not decided by its deadline is published as
REJECT (timeout) and its late result is dropped. Every trigger gets exactly one verdict;
a failure in any stage becomes a fail-safe REJECT with the stage's reason and an alarm,
and the next part is inspected normally.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from station import stages
from station.alarms import AlarmBoard
from station.camera.base import Camera
from station.images import ImageError
from station.inspection import Failure, Inspection, RejectReason, View
from station.online import OnlineSwitch
from station.recipe import LoadedRecipe
from station.stages import Findings, Inspector, StageFailure
from station.stats import StationStats

log = logging.getLogger("station.pipeline")
part_log = logging.getLogger("station.parts")


class TriggerRefused(Exception):
    """The station cannot take this part now (queue full, offline, no recipe). Carries a reason."""

    def __init__(self, reason: RejectReason, message: str):
        self.reason = reason
        super().__init__(message)


class ResultSink(Protocol):
    """Consumes complete inspections (PLC, database, HMI), in trigger order. Must return quickly
    and must not change the inspection (the next sink reads it too)."""

    def publish(self, inspection: Inspection) -> None: ...


class RecordKeeper(Protocol):
    """The durable record of verdicts (station.db.writer.HistoryWriter), asked before a part is
    taken: a part whose verdict could not be recorded is refused (the PLC diverts it)."""

    def refusal(self) -> str | None:
        """Why parts must be refused now, or None."""

    @property
    def unrecorded(self) -> int:
        """Verdicts given without a durable record since start."""


@dataclass(frozen=True)
class ActiveRecipe:
    loaded: LoadedRecipe
    inspector: Inspector


_STOP = object()


class Pipeline:
    def __init__(
        self,
        cameras: dict[str, Camera],
        build_inspector: Callable[[LoadedRecipe], Inspector],
        alarms: AlarmBoard,
        queue_depth: int = 4,
        inference_workers: int = 1,
        stats: StationStats | None = None,
        online: OnlineSwitch | None = None,
    ):
        self.cameras = cameras
        self.build_inspector = build_inspector
        self.alarms = alarms
        self.stats = stats or StationStats()
        # set by the composition (station.app.Station.connect_sinks) before start: the record first
        self.sinks: Sequence[ResultSink] = ()
        self.record_keeper: RecordKeeper | None = None
        self._recipe: ActiveRecipe | None = None
        self._recipe_lock = threading.Lock()
        self._seq_lock = threading.Lock()
        self._next_seq = 1
        self._acquire_q: queue.Queue = queue.Queue(maxsize=queue_depth)
        self._preprocess_q: queue.Queue = queue.Queue(maxsize=queue_depth)
        self._analyse_q: queue.Queue = queue.Queue(maxsize=queue_depth)
        self._done_q: queue.Queue = queue.Queue()
        self._pending: dict[int, Inspection] = {}
        self._pending_lock = threading.Lock()
        self._pending_cv = threading.Condition(self._pending_lock)  # notified when a part leaves _pending
        self._inference_workers = inference_workers
        self._threads: list[threading.Thread] = []
        self._running = False
        self.online = online or OnlineSwitch()  # PLC and HMI requests to be offline (station.online)
        self.last_progress_s = time.monotonic()  # for the systemd watchdog: publisher loop is alive
        self._published_cv = threading.Condition()
        self._published_seq = 0

    # ---- recipe -------------------------------------------------------------------------
    @property
    def recipe(self) -> ActiveRecipe | None:
        return self._recipe

    def load_recipe(self, loaded: LoadedRecipe) -> None:
        """Build the inspector for ``loaded`` and switch to it for parts triggered from now on.

        On failure the running recipe stays and the error propagates to the caller.
        """
        missing = [c.name for c in loaded.recipe.cameras if c.name not in self.cameras]
        if missing:
            raise ValueError(f"recipe {loaded.recipe.name}: cameras {missing} are not configured on this station")
        inspector = self.build_inspector(loaded)
        for view in loaded.recipe.cameras:  # features and trigger mode of each view
            self.cameras[view.name].configure(view)
        with self._recipe_lock:
            self._recipe = ActiveRecipe(loaded, inspector)
        log.info("recipe %s v%s active", loaded.recipe.name, loaded.recipe.version)

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        specs = [("acquire", self._acquire_loop), ("preprocess", self._preprocess_loop)]
        specs += [(f"analyse-{i}", self._analyse_loop) for i in range(self._inference_workers)]
        specs.append(("publish", self._publish_loop))
        for name, fn in specs:
            t = threading.Thread(target=fn, name=f"pipeline-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish parts in flight (each still gets its verdict), then stop the threads."""
        if not self._running:
            return
        self.wait_idle(timeout_s)
        self._running = False
        self._acquire_q.put(_STOP)
        for _ in range(self._inference_workers):
            self._analyse_q.put(_STOP)
        self._preprocess_q.put(_STOP)
        self._done_q.put(_STOP)
        for t in self._threads:
            t.join(timeout=timeout_s)
        self._threads.clear()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def in_flight(self) -> int:
        """Parts triggered and not yet published (the HMI shows BUSY while > 0)."""
        with self._pending_lock:
            return len(self._pending)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every part triggered so far is published; False after ``timeout_s``."""
        with self._pending_cv:
            return self._pending_cv.wait_for(lambda: not self._pending, timeout_s)

    def wait_in_flight_below(self, limit: int, timeout_s: float) -> bool:
        """Wait until fewer than ``limit`` parts are triggered and not yet published."""
        with self._pending_cv:
            return self._pending_cv.wait_for(lambda: len(self._pending) < limit, timeout_s)

    @property
    def inference_workers(self) -> int:
        return self._inference_workers

    def wait_published(self, sequence: int, timeout_s: float) -> bool:
        with self._published_cv:
            return self._published_cv.wait_for(lambda: self._published_seq >= sequence, timeout_s)

    # ---- trigger ------------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        """True while any source (the PLC's SET_OFFLINE, an operator) holds the station offline."""
        return self.online.offline

    def recording_refusal(self) -> str | None:
        """Why a part would be refused for its record (station.db.writer), or None."""
        keeper = self.record_keeper
        return None if keeper is None else keeper.refusal()

    @property
    def unrecorded(self) -> int:
        keeper = self.record_keeper
        return 0 if keeper is None else keeper.unrecorded

    @property
    def has_room(self) -> bool:
        """False while a trigger would be refused for a full acquisition queue (PLC READY)."""
        return not self._acquire_q.full()

    def trigger(self, part_id: int = 0) -> int:
        """Accept a part; returns its inspection sequence number. Raises TriggerRefused."""
        if not self._running:
            raise TriggerRefused(RejectReason.SHUTDOWN, "pipeline is not running")
        if self.offline:
            raise TriggerRefused(RejectReason.SHUTDOWN, "station is offline")
        active = self._recipe
        if active is None:
            raise TriggerRefused(RejectReason.NO_RECIPE, "no recipe loaded")
        why = self.recording_refusal()
        if why is not None:
            raise TriggerRefused(RejectReason.HISTORY_FULL, why)
        with self._seq_lock:
            seq = self._next_seq
            now = time.monotonic()
            insp = Inspection(
                sequence=seq,
                part_id=part_id,
                recipe=active.loaded,
                triggered_at_s=time.time(),
                deadline_s=now + active.loaded.recipe.time_budget_ms / 1000.0,
                started_s=now,
            )
            try:
                self._acquire_q.put_nowait((insp, active))
            except queue.Full:
                self.stats.count_refused()
                raise TriggerRefused(RejectReason.OVERRUN, "acquisition queue full") from None
            self._next_seq += 1
            with self._pending_lock:
                self._pending[seq] = insp
        return seq

    # ---- stages (station.stages) ----------------------------------------------------------
    def _acquire_loop(self) -> None:
        while (item := self._acquire_q.get()) is not _STOP:
            insp, active = item

            def grab() -> None:
                views = []
                for cam in active.loaded.recipe.cameras:
                    remaining = max(0.001, insp.deadline_s - time.monotonic())
                    try:
                        views.append(self.cameras[cam.name].grab(insp.part_id, timeout_s=remaining))
                    except ImageError as exc:  # the camera delivered, but not an image to inspect
                        raise ImageError(f"camera {cam.name}: {exc}") from exc
                    except Exception as exc:
                        raise StageFailure(RejectReason.CAMERA_ERROR, f"camera {cam.name}: {exc}") from exc
                insp.views = views

            stages.run_stage(insp, "acquire", grab)
            self._preprocess_q.put(item)
        self._preprocess_q.put(_STOP)

    def _preprocess_loop(self) -> None:
        while (item := self._preprocess_q.get()) is not _STOP:
            insp, active = item
            stages.preprocess(insp, active.inspector)
            self._analyse_q.put(item)

    def _analyse_loop(self) -> None:
        while (item := self._analyse_q.get()) is not _STOP:
            insp, active = item
            stages.analyse(insp, active.inspector)
            stages.decide(insp, active.inspector)
            self._done_q.put(insp)

    # ---- ordered, deadline-enforcing publication ------------------------------------------
    def _publish_loop(self) -> None:
        finished: dict[int, Inspection] = {}
        next_seq = 1
        while True:
            self.last_progress_s = time.monotonic()
            with self._pending_lock:
                head = self._pending.get(next_seq)
            # wait for a finished part, at most until the head's deadline (and 50 ms, for liveness)
            wait_s = 0.05 if head is None else min(0.05, max(0.0, head.deadline_s - time.monotonic()))
            try:
                item = None if next_seq in finished else self._done_q.get(timeout=wait_s)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if item is not None:
                if item.sequence < next_seq:
                    self.stats.count_late()
                    log.warning("part seq %s finished after its deadline; result dropped", item.sequence)
                else:
                    finished[item.sequence] = item
            # publish every head that is finished or past its deadline
            while True:
                with self._pending_lock:
                    head = self._pending.get(next_seq)
                if head is None:
                    break
                done = finished.pop(next_seq, None)
                if done is None and time.monotonic() < head.deadline_s:
                    break
                self._finish(done if done is not None else self._timed_out(head))
                next_seq += 1

    def _timed_out(self, insp: Inspection) -> Inspection:
        """A snapshot of a part past its deadline. A worker may still be running on the original
        and will change it when it finishes; sinks must only ever see this snapshot."""
        timings = dict(insp.timings_ms)
        stages_done = ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items()) or "no stage finished"
        return replace(
            insp,
            views=list(insp.views),
            defects=[],
            verdict=None,
            timings_ms=timings,
            scores=dict(insp.scores),
            model_hashes=dict(insp.model_hashes),
            overlay=None,
            failure=Failure(RejectReason.TIMEOUT, f"budget exceeded ({stages_done})"),
        )

    def _finish(self, insp: Inspection) -> None:
        stages.complete(insp)
        if insp.failure is not None:
            reason = insp.failure.reason
            self.alarms.raise_(f"part_failed:{reason.value}", "pipeline",
                               f"part {insp.part_id} (seq {insp.sequence}): {insp.verdict.reason}")
        else:
            for key in [a.key for a in self.alarms.active() if a.key.startswith("part_failed:")]:
                self.alarms.clear(key)
        with self._pending_cv:
            self._pending.pop(insp.sequence, None)
            self._pending_cv.notify_all()
        self.stats.record(insp)
        v = insp.verdict
        part_log.info(
            "part seq=%d id=%d recipe=%s verdict=%s reason=%r defects=%d %s",
            insp.sequence, insp.part_id, insp.recipe_name, v.outcome.value, v.reason, len(insp.defects),
            " ".join(f"{k}_ms={t:.1f}" for k, t in insp.timings_ms.items()),
        )
        for sink in self.sinks:
            try:
                sink.publish(insp)
            except Exception:
                log.exception("result sink %s failed", type(sink).__name__)
                self.alarms.raise_(f"sink_failed:{type(sink).__name__}", "pipeline", f"{type(sink).__name__} failed to take a result")
        with self._published_cv:
            self._published_seq = insp.sequence
            self._published_cv.notify_all()


__all__ = ["Pipeline", "Inspector", "Findings", "ResultSink", "RecordKeeper", "TriggerRefused", "ActiveRecipe", "View"]
