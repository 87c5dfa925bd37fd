"""The PLC handshake as a state machine over plain register values.

No network and no threads here: the server or client adapter feeds it the input words the
PLC wrote (``inputs_written``), every request it saw (``request_seen``), finished results
(``result_ready``) and the passing of time (``tick``), and writes ``outputs()`` back. It is
not thread-safe; the service serialises calls. Times are ``time.monotonic()`` seconds.

Handshake (see docs/plc.md for the timing diagram):
  TRIGGER ↑        → TRIGGER_ACK + BUSY (part accepted) or TRIGGER_FAILED + error code
  TRIGGER ↓        → TRIGGER_ACK / TRIGGER_FAILED ↓
  result decided   → result words written, then RESULT_VALID + exactly one of PASS / REJECT
  RESULT_ACK high  → RESULT_VALID / PASS / REJECT ↓ (result words reset to "no result")
  RESULT_ACK ↓     → next buffered result presented, if any
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, replace
from typing import Protocol

from station.plc.registers import (
    COMMAND_BITS,
    ERROR_TEXT,
    NO_RESULT,
    OUTPUT_WORDS,
    Control,
    ErrorCode,
    In,
    Out,
    Status,
    join_u32,
    split_u32,
    u16,
)

log = logging.getLogger("station.plc")

HEARTBEAT_PERIOD_S = 0.25  # station heartbeat: bit 15 toggles and word 101 counts up this often

ALARM_PLC_OFFLINE = "plc_offline"
ALARM_OVERRUN = "plc_overrun"
ALARM_COMMAND = "plc_command_failed"


class TriggerRejected(Exception):
    """Raised by ``StationActions.trigger`` when the station cannot take the part."""

    def __init__(self, code: ErrorCode, message: str):
        self.code = code
        super().__init__(message)


class StationActions(Protocol):
    """What the handshake asks of the station. The service implements it over the pipeline."""

    def trigger(self, part_id: int) -> int:
        """Accept a part; return its inspection sequence number or raise TriggerRejected."""

    def refusal(self) -> ErrorCode:
        """Why a trigger would be refused right now (offline, no recipe, pipeline full), or NONE."""

    def is_offline(self) -> bool: ...

    def set_offline(self, offline: bool) -> None: ...

    def start_load_recipe(self, plc_id: int) -> None:
        """Begin switching recipes; report the end through ``ModbusHandshake.load_finished``.
        Raise TriggerRejected(code) to fail at once (e.g. unknown PLC ID)."""

    def reset_counters(self) -> None: ...

    def counters(self) -> tuple[int, int]:
        """(parts inspected, parts rejected)."""

    def unrecorded(self) -> int:
        """Verdicts given without a durable record since start (registers 118-119)."""

    def active_recipe_id(self) -> int: ...

    def raise_alarm(self, key: str, message: str) -> None: ...

    def clear_alarm(self, key: str) -> None: ...


@dataclass(frozen=True)
class PlcResult:
    """One inspection result as the PLC sees it (registers 105–112)."""

    sequence: int
    part_id: int
    passed: bool  # only for a fully inspected part without a rejecting defect
    result_code: int  # 0 pass, class code, NO_RESULT (fail-safe)
    error_code: ErrorCode = ErrorCode.NONE
    defect_count: int = 0
    top_class: int = 0
    top_confidence_milli: int = 0
    processing_ms: int = 0


class ModbusHandshake:
    def __init__(self, actions: StationActions, result_buffer: int, watchdog_timeout_s: float):
        if result_buffer < 1:
            raise ValueError("result_buffer must be at least 1")
        self.actions = actions
        self.result_buffer = result_buffer  # results the station may hold: in flight + waiting + presented
        self.watchdog_timeout_s = watchdog_timeout_s
        self.running = False
        self.plc_online = False
        self.error = ErrorCode.NONE
        self.overrun = False
        self.trigger_ack = False
        self.trigger_failed = False
        self.cmd_done = False
        self.cmd_failed = False
        self.loading_recipe = False
        self.acquisition_id = 0
        self.heartbeat_count = 0
        self.heartbeat_bit = False
        self.in_flight: deque[int] = deque()  # sequences triggered through the PLC, not yet decided
        self.waiting: deque[PlcResult] = deque()  # decided, not yet presented
        self.presented: PlcResult | None = None
        self.acknowledged = 0  # results the PLC acknowledged since start
        self._control = 0
        self._words = [0, 0, 0, 0]
        self._last_toggle_s = 0.0
        self._last_request_s = 0.0
        self._next_heartbeat_s = 0.0

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self, now_s: float) -> None:
        """Begin serving. The PLC gets one watchdog period from now to show its heartbeat."""
        self.running = True
        self.plc_online = True
        self._last_toggle_s = self._last_request_s = now_s
        self._next_heartbeat_s = now_s + HEARTBEAT_PERIOD_S

    def stop(self) -> None:
        """Stop serving: ``outputs()`` are all cleared from now on (READY, PASS, RESULT_VALID low)."""
        self.running = False

    # ---- inputs ---------------------------------------------------------------------------
    def request_seen(self, now_s: float) -> None:
        """Any request from the PLC (server mode) or any successful poll of it (client mode)."""
        self._last_request_s = now_s
        self._check_watchdog(now_s)

    def inputs_written(self, words: list[int], now_s: float) -> None:
        """The PLC's input block (4 words) after a write; reacts to the edges since the last one."""
        if len(words) != 4:
            raise ValueError(f"input block has 4 words, got {len(words)}")
        words = [int(w) & 0xFFFF for w in words]
        control, previous = words[In.CONTROL], self._control
        self._words, self._control = words, control
        rose, fell = control & ~previous, previous & ~control
        if (rose | fell) & Control.HEARTBEAT:
            self._last_toggle_s = now_s
        self._last_request_s = now_s
        self._check_watchdog(now_s)
        if not self.running:
            return
        if fell & Control.TRIGGER:
            self.trigger_ack = self.trigger_failed = False
        if rose & Control.TRIGGER:
            self._on_trigger(join_u32(words[In.PART_ID_HI], words[In.PART_ID_LO]))
        if not control & Control.RESULT_ACK:
            self._present_next()
        elif self.presented is not None and self.plc_online:
            # RESULT_ACK counts as a level while a result is shown, so an edge lost during a
            # reconnect cannot stall the line. A result is only ever presented while the PLC's
            # last word had RESULT_ACK low, so a held or stale ACK cannot acknowledge a result
            # the PLC has not read.
            self._on_result_ack()
        if rose & Control.SET_OFFLINE:
            self.actions.set_offline(True)
        elif fell & Control.SET_OFFLINE:
            self.actions.set_offline(False)
        if not control & COMMAND_BITS:
            self.cmd_done = self.cmd_failed = False
        if rose & Control.LOAD_RECIPE:
            self._on_load_recipe(words[In.RECIPE_ID])
        if rose & Control.CLEAR_ERROR:
            self._on_clear_error()
        if rose & Control.RESET_COUNTERS:
            self.actions.reset_counters()
            self._command_result(True)

    def result_ready(self, result: PlcResult) -> bool:
        """A decided part. Returns False (and ignores it) if the PLC did not trigger it."""
        try:
            self.in_flight.remove(result.sequence)
        except ValueError:
            return False
        if not result.passed and result.result_code == 0:
            # defensive: a REJECT must never read as "pass" in the result code
            result = replace(result, result_code=NO_RESULT)
        self.waiting.append(result)
        self._present_next()
        return True

    def load_finished(self, ok: bool, error: ErrorCode = ErrorCode.NONE) -> None:
        """End of a LOAD_RECIPE started with ``actions.start_load_recipe``."""
        self.loading_recipe = False
        if ok:
            self.actions.clear_alarm(ALARM_COMMAND)
            self._command_result(True)
        else:
            self._set_error(error or ErrorCode.RECIPE_LOAD_FAILED)
            self.actions.raise_alarm(ALARM_COMMAND, ERROR_TEXT[error or ErrorCode.RECIPE_LOAD_FAILED])
            self._command_result(False)

    def tick(self, now_s: float) -> None:
        """Call often (≤ 10 ms apart): drives the station heartbeat and the PLC watchdog."""
        if self.running and now_s >= self._next_heartbeat_s:
            self.heartbeat_bit = not self.heartbeat_bit
            self.heartbeat_count = (self.heartbeat_count + 1) & 0xFFFF
            # catch up without a burst if a tick came late
            self._next_heartbeat_s = max(self._next_heartbeat_s + HEARTBEAT_PERIOD_S, now_s)
        self._check_watchdog(now_s)

    # ---- outputs --------------------------------------------------------------------------
    def outputs(self) -> list[int]:
        """The 20 output words (registers 100–119 in server mode)."""
        out = [0] * OUTPUT_WORDS
        out[Out.RESULT_CODE] = NO_RESULT
        if not self.running:
            return out
        status = Status(0)
        online = not self.actions.is_offline()
        if online:
            status |= Status.ONLINE
        if self.ready():
            status |= Status.READY
        if self.in_flight:
            status |= Status.BUSY
        if self.trigger_ack:
            status |= Status.TRIGGER_ACK
        if self.trigger_failed:
            status |= Status.TRIGGER_FAILED
        if self.error is not ErrorCode.NONE:
            status |= Status.ERROR
        if self.cmd_done:
            status |= Status.CMD_DONE
        if self.cmd_failed:
            status |= Status.CMD_FAILED
        if self.overrun:
            status |= Status.OVERRUN
        if self.heartbeat_bit:
            status |= Status.HEARTBEAT
        shown = self.result_shown()
        if shown is not None:
            status |= Status.RESULT_VALID | (Status.PASS if shown.passed else Status.REJECT)
            out[Out.SEQUENCE] = shown.sequence & 0xFFFF
            out[Out.RESULT_CODE] = shown.result_code & 0xFFFF
            out[Out.PART_ID_HI], out[Out.PART_ID_LO] = split_u32(shown.part_id)
            out[Out.DEFECT_COUNT] = u16(shown.defect_count)
            out[Out.TOP_CLASS] = u16(shown.top_class)
            out[Out.TOP_CONFIDENCE] = u16(shown.top_confidence_milli)
            out[Out.PROCESSING_MS] = u16(shown.processing_ms)
        out[Out.STATUS] = int(status)
        out[Out.HEARTBEAT_COUNT] = self.heartbeat_count
        out[Out.ACTIVE_RECIPE] = u16(self.actions.active_recipe_id())
        out[Out.ERROR_CODE] = int(self.error)
        out[Out.ACQUISITION_ID] = self.acquisition_id
        out[Out.RESULTS_WAITING] = u16(len(self.waiting))
        inspected, rejected = self.actions.counters()
        out[Out.INSPECTED_HI], out[Out.INSPECTED_LO] = split_u32(inspected)
        out[Out.REJECTED_HI], out[Out.REJECTED_LO] = split_u32(rejected)
        out[Out.UNRECORDED_HI], out[Out.UNRECORDED_LO] = split_u32(self.actions.unrecorded())
        return out

    def result_shown(self) -> PlcResult | None:
        """The result behind RESULT_VALID right now (None while the PLC link is down)."""
        return self.presented if self.running and self.plc_online else None

    def ready(self) -> bool:
        return (
            self.running
            and self.plc_online
            and not self.loading_recipe
            and self._has_room()
            and self.actions.refusal() is ErrorCode.NONE
        )

    # ---- internals ------------------------------------------------------------------------
    def _held(self) -> int:
        return len(self.in_flight) + len(self.waiting) + (self.presented is not None)

    def _has_room(self) -> bool:
        return self._held() < self.result_buffer

    def _on_trigger(self, part_id: int) -> None:
        self.trigger_ack = self.trigger_failed = False
        code = ErrorCode.NONE
        if not self.plc_online:
            code = ErrorCode.PLC_OFFLINE
        elif self.loading_recipe:
            code = ErrorCode.RECIPE_LOADING
        elif not self._has_room():
            code = ErrorCode.OVERRUN
        if code is ErrorCode.NONE:
            try:
                seq = self.actions.trigger(part_id)
            except TriggerRejected as exc:
                code = exc.code
                log.info("PLC trigger for part %d refused: %s", part_id, exc)
            else:
                self.in_flight.append(seq)
                self.acquisition_id = (self.acquisition_id + 1) & 0xFFFF
                self.trigger_ack = True
                return
        if code is ErrorCode.OVERRUN:
            self.overrun = True
            self.actions.raise_alarm(
                ALARM_OVERRUN, f"PLC trigger for part {part_id} refused: {self._held()} results not acknowledged"
            )
        self._set_error(code)
        self.trigger_failed = True

    def _on_result_ack(self) -> None:
        log.debug("PLC acknowledged seq %s", self.presented.sequence if self.presented else None)
        self.presented = None
        self.acknowledged += 1

    def _present_next(self) -> None:
        # only while the PLC's RESULT_ACK is low: the next result rises after ACK has dropped
        if self.presented is None and self.waiting and not self._control & Control.RESULT_ACK:
            self.presented = self.waiting.popleft()
            if self.presented.error_code is not ErrorCode.NONE:
                self._set_error(self.presented.error_code)

    def _on_load_recipe(self, plc_id: int) -> None:
        if self.loading_recipe:
            self._command_result(False, ErrorCode.RECIPE_LOADING)
            return
        try:
            self.loading_recipe = True
            self.actions.start_load_recipe(plc_id)
        except TriggerRejected as exc:
            self.loading_recipe = False
            self.actions.raise_alarm(ALARM_COMMAND, str(exc))
            self._command_result(False, exc.code)

    def _on_clear_error(self) -> None:
        if self._cause_present(self.error):
            self._command_result(False, None)
            log.info("CLEAR_ERROR refused: cause of %s still present", self.error.name)
            return
        if self.overrun and not self._has_room():
            self._command_result(False, None)
            return
        self.error = ErrorCode.NONE
        self.overrun = False
        for key in (ALARM_OVERRUN, ALARM_COMMAND):
            self.actions.clear_alarm(key)
        self._command_result(True)

    def _cause_present(self, code: ErrorCode) -> bool:
        if code is ErrorCode.OVERRUN:
            return not self._has_room()
        if code is ErrorCode.PLC_OFFLINE:
            return not self.plc_online
        if code is ErrorCode.RECIPE_LOADING:
            return self.loading_recipe
        if code in (ErrorCode.STATION_OFFLINE, ErrorCode.NO_RECIPE, ErrorCode.PIPELINE_FULL, ErrorCode.HISTORY_FULL):
            return self.actions.refusal() is code
        return False

    def _command_result(self, ok: bool, error: ErrorCode | None = None) -> None:
        self.cmd_done, self.cmd_failed = ok, not ok
        if error is not None and error is not ErrorCode.NONE:
            self._set_error(error)

    def _set_error(self, code: ErrorCode) -> None:
        if code is not ErrorCode.NONE:
            self.error = code

    def _check_watchdog(self, now_s: float) -> None:
        if not self.running:
            return
        stale = (now_s - self._last_toggle_s > self.watchdog_timeout_s) or (
            now_s - self._last_request_s > self.watchdog_timeout_s
        )
        if stale and self.plc_online:
            self.plc_online = False
            self._set_error(ErrorCode.PLC_OFFLINE)
            silent = max(now_s - self._last_toggle_s, now_s - self._last_request_s)
            self.actions.raise_alarm(
                ALARM_PLC_OFFLINE,
                f"PLC offline: no heartbeat toggle or request for {silent * 1000:.0f} ms "
                f"(timeout {self.watchdog_timeout_s * 1000:.0f} ms)",
            )
        elif not stale and not self.plc_online:
            self.plc_online = True
            if self.error is ErrorCode.PLC_OFFLINE:
                self.error = ErrorCode.NONE
            self.actions.clear_alarm(ALARM_PLC_OFFLINE)
            log.info("PLC back online")

