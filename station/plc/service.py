"""PlcService: the PLC link of the station, a pipeline ResultSink.

Wires the handshake state machine to the pipeline (triggers, recipes, offline, counters), to
the alarm board, and to the wire: the Modbus server (default) or the client poller. One lock
serialises the handshake; a ticker thread drives the station heartbeat and the PLC watchdog
every 10 ms. Outputs are cleared (READY, PASS, RESULT_VALID low; result code 0xFFFF) before
the link opens and again when it stops.
"""

from __future__ import annotations

import logging
import threading
import time

from station.alarms import AlarmBoard
from station.config import PlcConfig
from station.inspection import Inspection, Outcome, RejectReason
from station.online import PLC
from station.pipeline import Pipeline, TriggerRefused
from station.plc.handshake import ModbusHandshake, PlcResult, TriggerRejected
from station.plc.registers import (
    ERROR_TEXT,
    FAILSAFE_RESULT_CODE,
    NO_RESULT,
    REVIEW,
    TRIGGER_REFUSED_CODE,
    ErrorCode,
    Status,
    describe_bits,
)
from station.recipe_switch import RecipeSwitcher, RecipeUnknown
from station.stats import StationStats

log = logging.getLogger("station.plc")

TICK_S = 0.01


class PlcService:
    def __init__(
        self,
        config: PlcConfig,
        pipeline: Pipeline,
        switcher: RecipeSwitcher,
        alarms: AlarmBoard,
        stats: StationStats,
    ):
        self.config = config
        self.pipeline = pipeline
        self.switcher = switcher
        self.alarms = alarms
        self.stats = stats
        self._lock = threading.RLock()
        self.handshake = ModbusHandshake(
            _PipelineActions(self), config.result_buffer, config.heartbeat_timeout_ms / 1000.0
        )
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._loader: threading.Thread | None = None
        self._last_outputs: list[int] | None = None
        self.server = None
        self.poller = None
        if config.mode == "server":
            from station.plc.server import RegisterServer

            self.server = RegisterServer(
                config.host, config.port, config.unit_id, config.allow, self._on_inputs, self._on_request,
                max_connections=config.max_connections, idle_timeout_s=config.idle_timeout_ms / 1000.0,
                reader_interval_s=config.reader_interval_ms / 1000.0,
            )
        else:
            from station.plc.client import PlcPoller

            self.poller = PlcPoller(config, self._exchange)

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Open the link with cleared outputs, then begin the handshake (READY when all is well)."""
        with self._lock:
            self._push(self.handshake.outputs())  # not running yet: cleared block
        if self.server is not None:
            self.server.start()
        with self._lock:
            self.handshake.start(time.monotonic())
            self._push(self.handshake.outputs())
        if self.poller is not None:
            self.poller.start()
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick_loop, name="plc-ticker", daemon=True)
        self._ticker.start()
        log.info("PLC link started (%s mode, %s:%d)", self.config.mode, self.config.host, self.config.port)

    def stop(self) -> None:
        """Clear the outputs, then close the link. Safe to call twice."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2.0)
            self._ticker = None
        with self._lock:
            self.handshake.stop()
            cleared = self.handshake.outputs()
            self._push(cleared)
        if self.poller is not None:
            self.poller.stop(final_outputs=cleared)
        if self.server is not None:
            self.server.stop()
        if self._loader is not None:
            self._loader.join(10.0)

    # ---- pipeline sink --------------------------------------------------------------------
    def publish(self, inspection: Inspection) -> None:
        """Called by the pipeline's publisher thread, in trigger order. Quick: no I/O but a
        memory write in server mode."""
        result = self._to_plc_result(inspection)
        with self._lock:
            self.handshake.result_ready(result)
            self._push(self.handshake.outputs())

    def outputs(self) -> list[int]:
        """The output block as it is now (for the HMI and tests)."""
        with self._lock:
            return self.handshake.outputs()

    def snapshot(self) -> dict:
        """Link state for the HMI and `station doctor` (plain values, safe to serialise)."""
        with self._lock:
            hs = self.handshake
            out = hs.outputs()
            snap = {
                "mode": self.config.mode,
                "address": f"{self.config.host}:{self.config.port}",
                "running": hs.running,
                "plc_online": hs.plc_online,
                "ready": bool(out[0] & Status.READY),
                "status_bits": describe_bits(Status, out[0]),
                "error_code": int(hs.error),
                "error": ERROR_TEXT[hs.error],
                "in_flight": len(hs.in_flight),
                "results_waiting": len(hs.waiting) + (hs.presented is not None),
                "acknowledged": hs.acknowledged,
                "accepted_triggers": hs.acquisition_id,
            }
        if self.server is not None:
            snap.update(
                requests=self.server.requests,
                refused_requests=self.server.refused_requests,
                refused_connections=self.server.refused_connections,
                dropped_connections=self.server.dropped_connections,
                open_connections=self.server.open_connections,
                idle_closed=self.server.idle_closed,
            )
        if self.poller is not None:
            snap.update(connected=self.poller.connected, polls=self.poller.polls, reconnects=max(0, self.poller.connects - 1))
        return snap

    # ---- link callbacks -------------------------------------------------------------------
    def _on_inputs(self, words: list[int]) -> None:
        with self._lock:
            self.handshake.inputs_written(words, time.monotonic())
            self._push(self.handshake.outputs())

    def _on_request(self) -> None:
        # every request of every client lands here: only the watchdog can change, so the output
        # block is rebuilt only when it did (the ticker and the other callbacks push the rest)
        with self._lock:
            online = self.handshake.plc_online
            self.handshake.request_seen(time.monotonic())
            if self.handshake.plc_online != online:
                self._push(self.handshake.outputs())

    def _exchange(self, words: list[int], now_s: float) -> list[int]:
        with self._lock:
            self.handshake.inputs_written(words, now_s)
            self.handshake.tick(now_s)
            return self.handshake.outputs()

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                self.handshake.tick(time.monotonic())
                self._push(self.handshake.outputs())

    def _push(self, outputs: list[int]) -> None:
        if self.server is not None and outputs != self._last_outputs:
            self.server.write_outputs(outputs)
        self._last_outputs = outputs

    # ---- recipes --------------------------------------------------------------------------
    def _start_load(self, plc_id: int) -> None:
        self._loader = threading.Thread(target=self._load, args=(plc_id,), name="plc-load-recipe", daemon=True)
        self._loader.start()

    def _load(self, plc_id: int) -> None:
        """LOAD_RECIPE through the station's one switching path (station.recipe_switch): it
        audits, alarms on failure and keeps the running recipe; the PLC gets the outcome."""
        ok, code = True, ErrorCode.NONE
        try:
            self.switcher.switch(plc_id=plc_id, actor="plc", via="LOAD_RECIPE")
        except RecipeUnknown:
            ok, code = False, ErrorCode.RECIPE_UNKNOWN
        except Exception:  # RecipeLoadFailed and anything unexpected: the running recipe stays
            ok, code = False, ErrorCode.RECIPE_LOAD_FAILED
        with self._lock:
            self.handshake.load_finished(ok, code)
            self._push(self.handshake.outputs())

    # ---- results --------------------------------------------------------------------------
    def _to_plc_result(self, insp: Inspection) -> PlcResult:
        v = insp.verdict
        failsafe = v is None or insp.failure is not None or v.plc_code == NO_RESULT or v.failsafe
        passed = not failsafe and v.outcome is Outcome.PASS and v.plc_code == 0
        review = not failsafe and v.outcome is Outcome.REVIEW
        error = ErrorCode.NONE
        if passed:
            code = 0
        elif failsafe:
            code = NO_RESULT
            reason = v.reject_reason if v is not None else None
            error = FAILSAFE_RESULT_CODE.get(reason, ErrorCode.NO_RESULT)
        elif review:  # diverted for a person: REJECT with the review code, whatever the verdict carried
            code = REVIEW
        elif 1 <= v.plc_code < NO_RESULT and v.plc_code != REVIEW:
            code = v.plc_code
        else:  # a REJECT without a class code, or a PASS carrying one: not a trustworthy result
            code, error = NO_RESULT, ErrorCode.NO_RESULT
        top = v.top_defect if v is not None and v.top_defect is not None else None
        if top is None and insp.defects and not failsafe:
            top = max(insp.defects, key=lambda d: d.confidence)
        top_class = 0
        if top is not None:
            top_class = code if (not passed and code not in (NO_RESULT, REVIEW)) else _class_code(insp, top.class_name)
        return PlcResult(
            sequence=insp.sequence,
            part_id=insp.part_id,
            passed=passed,
            result_code=code,
            error_code=error,
            defect_count=0 if failsafe else len(insp.defects),
            top_class=top_class,
            top_confidence_milli=round(top.confidence * 1000) if top is not None else 0,
            processing_ms=round(insp.total_ms),
        )


def _class_code(insp: Inspection, class_name: str) -> int:
    """The PLC code of ``class_name`` in the recipe the part was inspected with (0: not a class of it)."""
    try:
        return insp.recipe.recipe.defect_class(class_name).plc_code
    except KeyError:
        return 0


class _PipelineActions:
    """StationActions over the real pipeline, recipe book, stats and alarm board."""

    def __init__(self, service: PlcService):
        self.s = service

    def trigger(self, part_id: int) -> int:
        try:
            return self.s.pipeline.trigger(part_id)
        except TriggerRefused as exc:
            if exc.reason is RejectReason.SHUTDOWN and not self.s.pipeline.offline:
                raise TriggerRejected(ErrorCode.NOT_RUNNING, str(exc)) from None
            raise TriggerRejected(TRIGGER_REFUSED_CODE.get(exc.reason, ErrorCode.INTERNAL), str(exc)) from None

    def refusal(self) -> ErrorCode:
        if self.s.pipeline.offline:
            return ErrorCode.STATION_OFFLINE
        if self.s.pipeline.recipe is None:
            return ErrorCode.NO_RECIPE
        if self.s.pipeline.recording_refusal() is not None:
            return ErrorCode.HISTORY_FULL
        if not self.s.pipeline.has_room:
            return ErrorCode.PIPELINE_FULL
        return ErrorCode.NONE

    def is_offline(self) -> bool:
        return bool(self.s.pipeline.offline)

    def set_offline(self, offline: bool) -> None:
        # the PLC's own request only: an operator's "offline" at the HMI stays (station.online)
        if self.s.pipeline.online.set_offline(PLC, offline, "SET_OFFLINE"):
            log.info("PLC %s SET_OFFLINE: station %s", "raises" if offline else "drops", self.s.pipeline.online.describe())

    def start_load_recipe(self, plc_id: int) -> None:
        self.s._start_load(plc_id)

    def reset_counters(self) -> None:
        log.info("PLC resets the part counters")
        self.s.stats.reset()

    def counters(self) -> tuple[int, int]:
        """(parts inspected, parts the PLC diverted: rejected and sent to review)."""
        return self.s.stats.parts, self.s.stats.rejected + self.s.stats.reviewed

    def unrecorded(self) -> int:
        return self.s.pipeline.unrecorded

    def active_recipe_id(self) -> int:
        active = self.s.pipeline.recipe
        return active.loaded.recipe.plc_id if active is not None else 0

    def raise_alarm(self, key: str, message: str) -> None:
        self.s.alarms.raise_(key, "plc", message)

    def clear_alarm(self, key: str) -> None:
        self.s.alarms.clear(key)
