"""An independent Modbus master (Debian's mbpoll) drives the handshake against the real server."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from station.plc.registers import Control, ErrorCode, Out, Status

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll not installed (apt install mbpoll)")]


def mbpoll(port: int, ref: int, *values: int, count: int = 1, kind: str = "4", extra=()) -> subprocess.CompletedProcess:
    cmd = ["mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1", "-o", "2", "-t", kind, "-r", str(ref), *extra]
    if not values:
        cmd += ["-c", str(count)]
    cmd.append("127.0.0.1")
    cmd += [str(v) for v in values]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


def read(port: int, ref: int, count: int = 1, kind: str = "4", extra=()) -> dict[int, int]:
    p = mbpoll(port, ref, count=count, kind=kind, extra=extra)
    assert p.returncode == 0, p.stderr
    return {int(a): int(v) for a, v in re.findall(r"^\[(\d+)\]:\s+(-?\d+)", p.stdout, re.M)}


def write(port: int, ref: int, *values: int) -> None:
    p = mbpoll(port, ref, *values)
    assert p.returncode == 0 and "Written" in p.stdout, p.stdout + p.stderr


def wait_status(port: int, predicate, timeout_s: float = 10.0) -> dict[int, int]:
    end = time.monotonic() + timeout_s
    while True:
        regs = read(port, 100, count=20)
        if predicate(Status(regs[100])):
            return regs
        assert time.monotonic() < end, f"status {Status(regs[100])!r}"
        time.sleep(0.05)


def test_mbpoll_reads_status_and_writes_trigger(make_rig):
    rig = make_rig(heartbeat_timeout_ms=60_000)  # mbpoll cannot toggle a heartbeat between runs
    rig.inspector.defective = {4242}
    port = rig.port
    regs = wait_status(port, lambda s: bool(s & Status.READY))
    assert set(regs) == set(range(100, 120)) and regs[102] == 7

    write(port, 2, 0, 4242)  # part ID, uint32 high word first
    write(port, 0, int(Control.TRIGGER | Control.HEARTBEAT))
    regs = wait_status(port, lambda s: bool(s & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED)))
    assert Status(regs[100]) & Status.TRIGGER_ACK and regs[104] == 1
    write(port, 0, int(Control.HEARTBEAT))
    regs = wait_status(port, lambda s: bool(s & Status.RESULT_VALID) and not s & Status.TRIGGER_ACK)
    assert Status(regs[100]) & Status.REJECT and not Status(regs[100]) & Status.PASS
    assert regs[106] == 3 and regs[105] == 1 and regs[109] == 1
    # mbpoll's own 32-bit decoding; -B = big-endian word order (high word first), as documented
    assert read(port, 107, kind="4:int", extra=["-B"])[107] == 4242

    write(port, 0, int(Control.RESULT_ACK))  # heartbeat bit toggles back to 0 here
    wait_status(port, lambda s: not s & Status.RESULT_VALID)
    write(port, 0, 0)
    assert rig.service.handshake.acknowledged == 1
    assert rig.pipeline.stats.parts == 1 and rig.pipeline.stats.rejected == 1


def test_mbpoll_write_to_output_block_is_refused(make_rig):
    rig = make_rig(heartbeat_timeout_ms=60_000)
    p = mbpoll(rig.port, 103, 99)
    assert p.returncode != 0 and "Illegal data address" in p.stderr
    assert read(rig.port, 103)[103] == ErrorCode.NONE
    assert rig.service.outputs()[Out.ERROR_CODE] == 0
