"""The PLC register map and error-code table: the one source of truth.

Holding registers, 16-bit, 0-based PDU addresses. 32-bit values are big-endian words (high
word first). The input block (PLC → station) is the only block the PLC may write; the output
block (station → PLC) is read-only to the PLC. Offsets below are relative to each block's
base address (server mode: 0 and 100; client mode: ``PlcConfig.input_base`` / ``output_base``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from station.inspection import NO_RESULT_PLC_CODE, REVIEW_PLC_CODE, RejectReason
from station.recipe import MAX_CLASS_PLC_CODE
from station.verdict import UNKNOWN_CLASS_PLC_CODE

INPUT_BASE = 0  # server mode: where the PLC writes
OUTPUT_BASE = 100  # server mode: where the PLC reads
INPUT_WORDS = 4
OUTPUT_WORDS = 20
NO_RESULT = NO_RESULT_PLC_CODE  # result code when there is no valid inspection result (fail-safe)
REVIEW = REVIEW_PLC_CODE  # result code of a REVIEW verdict: divert the part for manual inspection
UNKNOWN_CLASS = UNKNOWN_CLASS_PLC_CODE  # a defect of a class the recipe does not know: reject

# Register 106 (RESULT_CODE) with RESULT_VALID: what the PLC does with the part. Every code but
# 0 comes with the REJECT status bit, so a PLC program that only knows PASS / REJECT never
# passes a part sent to review.
RESULT_CODES: tuple[tuple[str, str], ...] = (
    ("0", "PASS: the part is good (PASS bit set)"),
    (f"1..0x{MAX_CLASS_PLC_CODE:04X}", "REJECT: the recipe's plc_code of the top defect's class"),
    (f"0x{REVIEW:04X}", "REVIEW: divert for manual inspection (a finding in the recipe's review band, none that "
                       "rejects); REJECT bit set, never PASS; TOP_CLASS names the doubtful finding's class"),
    (f"0x{UNKNOWN_CLASS:04X}", "REJECT: a defect of a class the recipe does not know"),
    (f"0x{NO_RESULT:04X}", "REJECT, fail-safe: no valid result (the reason is in register 103)"),
)


class Control(enum.IntFlag):
    """Input word 0: control bits written by the PLC."""

    TRIGGER = 1 << 0  # rising edge: take the part whose ID is in words 2–3
    RESULT_ACK = 1 << 1  # rising edge: the presented result has been read
    LOAD_RECIPE = 1 << 2  # rising edge: switch to the recipe whose PLC ID is in word 1
    CLEAR_ERROR = 1 << 3  # rising edge: clear the error code if its cause is gone
    SET_OFFLINE = 1 << 4  # level: while high the station refuses triggers
    RESET_COUNTERS = 1 << 5  # rising edge: zero the part counters (words 114–117)
    HEARTBEAT = 1 << 15  # toggled by the PLC; the station's watchdog watches it


COMMAND_BITS = Control.LOAD_RECIPE | Control.CLEAR_ERROR | Control.RESET_COUNTERS


class Status(enum.IntFlag):
    """Output word 0 (register 100): status bits written by the station."""

    READY = 1 << 0
    BUSY = 1 << 1
    TRIGGER_ACK = 1 << 2
    TRIGGER_FAILED = 1 << 3
    RESULT_VALID = 1 << 4
    PASS = 1 << 5
    REJECT = 1 << 6
    ERROR = 1 << 7
    CMD_DONE = 1 << 8
    CMD_FAILED = 1 << 9
    OVERRUN = 1 << 10
    ONLINE = 1 << 11
    HEARTBEAT = 1 << 15


class In(enum.IntEnum):
    """Offsets in the input block."""

    CONTROL = 0
    RECIPE_ID = 1
    PART_ID_HI = 2
    PART_ID_LO = 3


class Out(enum.IntEnum):
    """Offsets in the output block (register = OUTPUT_BASE + offset in server mode)."""

    STATUS = 0
    HEARTBEAT_COUNT = 1
    ACTIVE_RECIPE = 2
    ERROR_CODE = 3
    ACQUISITION_ID = 4
    SEQUENCE = 5
    RESULT_CODE = 6
    PART_ID_HI = 7
    PART_ID_LO = 8
    DEFECT_COUNT = 9
    TOP_CLASS = 10
    TOP_CONFIDENCE = 11
    PROCESSING_MS = 12
    RESULTS_WAITING = 13
    INSPECTED_HI = 14
    INSPECTED_LO = 15
    REJECTED_HI = 16
    REJECTED_LO = 17
    UNRECORDED_HI = 18
    UNRECORDED_LO = 19


class ErrorCode(enum.IntEnum):
    """Register 103. 0 = no error. Codes 1–19 refuse a trigger, 20–29 answer a command,
    30–39 are link faults, 40–59 explain a fail-safe REJECT (result code 0xFFFF)."""

    NONE = 0
    OVERRUN = 1
    STATION_OFFLINE = 2
    NO_RECIPE = 3
    PIPELINE_FULL = 4
    RECIPE_LOADING = 5
    NOT_RUNNING = 6
    HISTORY_FULL = 7
    RECIPE_UNKNOWN = 20
    RECIPE_LOAD_FAILED = 21
    PLC_OFFLINE = 30
    TIMEOUT = 40
    CAMERA_ERROR = 41
    PREPROCESS_ERROR = 42
    MODEL_ERROR = 43
    DECISION_ERROR = 44
    SHUTDOWN = 45
    NO_RESULT = 46
    IMAGE_ERROR = 47
    INTERNAL = 99


ERROR_TEXT: dict[ErrorCode, str] = {
    ErrorCode.NONE: "no error",
    ErrorCode.OVERRUN: "trigger refused: result buffer full (PLC has not acknowledged results); OVERRUN set",
    ErrorCode.STATION_OFFLINE: "trigger refused: station is offline (SET_OFFLINE or operator)",
    ErrorCode.NO_RECIPE: "trigger refused: no recipe is active",
    ErrorCode.PIPELINE_FULL: "trigger refused: acquisition queue full (parts arrive faster than they are inspected)",
    ErrorCode.RECIPE_LOADING: "trigger refused: a LOAD_RECIPE command is still running",
    ErrorCode.NOT_RUNNING: "trigger refused: inspection pipeline is not running",
    ErrorCode.HISTORY_FULL: ("trigger refused: verdicts cannot be recorded (history backlog full or journal failing; "
                             "[database] on_history_full = \"stop\"): divert the part; clears when the backlog drains"),
    ErrorCode.RECIPE_UNKNOWN: "LOAD_RECIPE failed: no recipe has the PLC ID in register 1",
    ErrorCode.RECIPE_LOAD_FAILED: "LOAD_RECIPE failed: the recipe or its models could not be loaded; previous recipe stays",
    ErrorCode.PLC_OFFLINE: ("PLC heartbeat or requests missing for longer than the timeout; triggers refused; "
                            "clears itself when the PLC returns"),
    ErrorCode.TIMEOUT: "part not decided within the recipe's time budget: fail-safe REJECT",
    ErrorCode.CAMERA_ERROR: "camera failed to deliver an image: fail-safe REJECT",
    ErrorCode.PREPROCESS_ERROR: "image preprocessing failed: fail-safe REJECT",
    ErrorCode.MODEL_ERROR: "segmentation / classification failed: fail-safe REJECT",
    ErrorCode.DECISION_ERROR: "recipe rules could not decide: fail-safe REJECT",
    ErrorCode.SHUTDOWN: "station shutting down: fail-safe REJECT",
    ErrorCode.NO_RESULT: "inspection produced no valid result: fail-safe REJECT",
    ErrorCode.IMAGE_ERROR: "image truncated, corrupt or too large (not inspected): fail-safe REJECT",
    ErrorCode.INTERNAL: "internal error in the station (see the station log)",
}

# A refused trigger or a fail-safe result, by the pipeline's reason.
TRIGGER_REFUSED_CODE: dict[RejectReason, ErrorCode] = {
    RejectReason.OVERRUN: ErrorCode.PIPELINE_FULL,
    RejectReason.NO_RECIPE: ErrorCode.NO_RECIPE,
    RejectReason.SHUTDOWN: ErrorCode.STATION_OFFLINE,
    RejectReason.HISTORY_FULL: ErrorCode.HISTORY_FULL,
}
FAILSAFE_RESULT_CODE: dict[RejectReason, ErrorCode] = {
    RejectReason.TIMEOUT: ErrorCode.TIMEOUT,
    RejectReason.CAMERA_ERROR: ErrorCode.CAMERA_ERROR,
    RejectReason.IMAGE_ERROR: ErrorCode.IMAGE_ERROR,
    RejectReason.PREPROCESS_ERROR: ErrorCode.PREPROCESS_ERROR,
    RejectReason.MODEL_ERROR: ErrorCode.MODEL_ERROR,
    RejectReason.DECISION_ERROR: ErrorCode.DECISION_ERROR,
    RejectReason.NO_RECIPE: ErrorCode.NO_RESULT,
    RejectReason.OVERRUN: ErrorCode.NO_RESULT,
    RejectReason.SHUTDOWN: ErrorCode.SHUTDOWN,
}


@dataclass(frozen=True)
class RegisterDoc:
    address: int
    width: int  # registers
    name: str
    content: str


INPUT_MAP: tuple[RegisterDoc, ...] = (
    RegisterDoc(0, 1, "CONTROL", "control bits: b0 TRIGGER (rising edge), b1 RESULT_ACK, b2 LOAD_RECIPE, "
                "b3 CLEAR_ERROR, b4 SET_OFFLINE (level), b5 RESET_COUNTERS, b15 PLC heartbeat (toggled by the PLC)"),
    RegisterDoc(1, 1, "RECIPE_ID", "recipe PLC ID to load with LOAD_RECIPE"),
    RegisterDoc(2, 2, "PART_ID", "part ID (uint32, high word first) for the next trigger"),
)

OUTPUT_MAP: tuple[RegisterDoc, ...] = (
    RegisterDoc(100, 1, "STATUS", "status bits: b0 READY, b1 BUSY, b2 TRIGGER_ACK, b3 TRIGGER_FAILED, b4 RESULT_VALID, "
                "b5 PASS, b6 REJECT, b7 ERROR, b8 CMD_DONE, b9 CMD_FAILED, b10 OVERRUN, b11 ONLINE, "
                "b15 heartbeat (toggles every 250 ms)"),
    RegisterDoc(101, 1, "HEARTBEAT_COUNT", "heartbeat counter, +1 every 250 ms (wraps)"),
    RegisterDoc(102, 1, "ACTIVE_RECIPE", "PLC ID of the active recipe (0: none)"),
    RegisterDoc(103, 1, "ERROR_CODE", "error code (0 = none; see the error table)"),
    RegisterDoc(104, 1, "ACQUISITION_ID", "accepted triggers (wraps at 65536)"),
    RegisterDoc(105, 1, "SEQUENCE", "inspection sequence number of the presented result (low 16 bits)"),
    RegisterDoc(106, 1, "RESULT_CODE", f"0 pass, 1..0x{MAX_CLASS_PLC_CODE:04X} PLC code of the top defect class, "
                f"0x{REVIEW:04X} review (divert for manual inspection; REJECT bit set), 0x{UNKNOWN_CLASS:04X} unknown class, "
                f"0x{NO_RESULT:04X} no result (fail-safe); see the result codes"),
    RegisterDoc(107, 2, "PART_ID_ECHO", "part ID of the presented result (uint32, high word first)"),
    RegisterDoc(109, 1, "DEFECT_COUNT", "defects found on the part"),
    RegisterDoc(110, 1, "TOP_CLASS", "PLC code of the top defect's class (0: none)"),
    RegisterDoc(111, 1, "TOP_CONFIDENCE", "top defect confidence × 1000"),
    RegisterDoc(112, 1, "PROCESSING_MS", "trigger-to-decision time of the part, ms (saturates at 65535)"),
    RegisterDoc(113, 1, "RESULTS_WAITING", "finished results queued behind the presented one"),
    RegisterDoc(114, 2, "PARTS_INSPECTED", "parts inspected (uint32, high word first)"),
    RegisterDoc(116, 2, "PARTS_REJECTED", "parts rejected, those sent to review included (uint32, high word first)"),
    RegisterDoc(118, 2, "UNRECORDED", "verdicts given since start without a durable record (uint32; "
                "on_history_full = \"continue\" with the backlog full, or the journal failing); 0 is the norm"),
)


def split_u32(value: int) -> tuple[int, int]:
    """uint32 → (high word, low word); values outside 0..2**32-1 wrap."""
    value &= 0xFFFFFFFF
    return value >> 16, value & 0xFFFF


def join_u32(high: int, low: int) -> int:
    return ((high & 0xFFFF) << 16) | (low & 0xFFFF)


def u16(value: int) -> int:
    """Saturate a non-negative count into one register."""
    return max(0, min(0xFFFF, int(value)))


def describe_bits(flags: type[enum.IntFlag], value: int) -> str:
    names = [f.name for f in flags if f.value & value and f.name]
    return "|".join(names) or "0"


def format_map() -> str:
    """The map and the error table as plain text (for `station plc map`)."""
    lines = ["PLC → station (holding registers the PLC writes; server mode base 0):"]
    lines += [f"  {_addr(r)}  {r.name:<16} {r.content}" for r in INPUT_MAP]
    lines += ["", "station → PLC (read-only to the PLC; server mode base 100):"]
    lines += [f"  {_addr(r)}  {r.name:<16} {r.content}" for r in OUTPUT_MAP]
    lines += ["", "result codes (register 106, with RESULT_VALID):"]
    lines += [f"  {code:<14} {text}" for code, text in RESULT_CODES]
    lines += ["", "error codes (register 103):"]
    lines += [f"  {int(code):>3}  {code.name:<19} {ERROR_TEXT[code]}" for code in ErrorCode]
    return "\n".join(lines)


def _addr(r: RegisterDoc) -> str:
    text = str(r.address) if r.width == 1 else f"{r.address}–{r.address + r.width - 1}"
    return f"{text:<8}"
