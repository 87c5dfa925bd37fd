"""Hostile bytes on the wire: the server answers with a Modbus exception or drops the
connection, never changes a register, and keeps serving the other clients."""

from __future__ import annotations

import socket
import struct

import pytest

from station.plc.registers import Out
from station.plc.server import check_frame


def mbap(tid: int, unit: int, pdu: bytes, pid: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1 if length is None else length, unit) + pdu


def read_req(tid, address, count, unit=1):
    return mbap(tid, unit, struct.pack(">BHH", 3, address, count))


def exchange(port: int, data: bytes, wait_s: float = 1.0):
    """Send raw bytes on a fresh connection; returns the reply, "closed" or "silent"."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(data)
        try:
            reply = s.recv(512)
        except TimeoutError:
            return "silent"
        return reply if reply else "closed"


def exception_reply(tid, unit, fc, code):
    return struct.pack(">HHHBBB", tid, 0, 3, unit, fc | 0x80, code)


EXCEPTIONS = [
    ("unknown function 0x5A", mbap(2, 1, bytes([0x5A, 0, 0, 0, 1])), exception_reply(2, 1, 0x5A, 1)),
    ("read coils (not served)", mbap(3, 1, struct.pack(">BHH", 1, 0, 1)), exception_reply(3, 1, 0x01, 1)),
    ("diagnostics (not served)", mbap(4, 1, struct.pack(">BHH", 8, 4, 0)), exception_reply(4, 1, 0x08, 1)),
    ("wrong unit ID", read_req(5, 100, 2, unit=9), exception_reply(5, 9, 0x03, 0x0B)),
    ("read past the map", read_req(6, 110, 20), exception_reply(6, 1, 0x03, 2)),
    ("read wrapping 65535", read_req(7, 65530, 10), exception_reply(7, 1, 0x03, 2)),
    ("read count 0", read_req(8, 100, 0), exception_reply(8, 1, 0x03, 2)),
    ("write status register", mbap(9, 1, struct.pack(">BHH", 6, 100, 0xFFFF)), exception_reply(9, 1, 0x06, 2)),
    ("write far out", mbap(10, 1, struct.pack(">BHH", 6, 40000, 1)), exception_reply(10, 1, 0x06, 2)),
    ("write multiple across block end", mbap(11, 1, struct.pack(">BHHB", 16, 3, 2, 4) + b"\0\1\0\2"), exception_reply(11, 1, 0x10, 2)),
    ("byte count lies", mbap(12, 1, struct.pack(">BHHB", 16, 0, 2, 10) + b"\0\1\0\2"), exception_reply(12, 1, 0x10, 3)),
    ("read with extra bytes", mbap(13, 1, struct.pack(">BHHH", 3, 100, 1, 7)), exception_reply(13, 1, 0x03, 3)),
]

DROPS = [
    ("protocol ID not 0", read_req(20, 100, 1)[:2] + b"\x00\x07" + read_req(20, 100, 1)[4:]),
    ("MBAP length 0", mbap(21, 1, struct.pack(">BHH", 3, 100, 1), length=0)),
    ("MBAP length 65535", mbap(22, 1, struct.pack(">BHH", 3, 100, 1), length=0xFFFF)),
    ("empty PDU", mbap(23, 1, b"")),
    ("line noise", bytes(range(1, 41))),
]


@pytest.fixture
def served(make_rig):
    rig = make_rig()
    plc = rig.master()
    plc.beat()
    return rig, plc


@pytest.mark.parametrize("name,frame,expected", EXCEPTIONS, ids=[c[0] for c in EXCEPTIONS])
def test_bad_request_gets_exception_and_changes_nothing(served, name, frame, expected):
    rig, plc = served
    before = rig.service.server.registers.snapshot()
    assert exchange(rig.port, frame) == expected
    after = rig.service.server.registers.snapshot()
    assert after[:4] == before[:4] and after[4:100] == [0] * 96
    assert after[100 + Out.ERROR_CODE] == 0 and after[100 + Out.ACQUISITION_ID] == 0
    assert plc.outputs()[Out.ACTIVE_RECIPE] == 7  # the PLC's own connection still served


def test_exception_keeps_the_connection_usable(served):
    rig, _ = served
    with socket.create_connection(("127.0.0.1", rig.port), timeout=1) as s:
        s.sendall(mbap(30, 1, bytes([0x5A, 0, 0])) + read_req(31, 102, 1))  # two frames in one segment
        reply = b""
        while len(reply) < 9 + 11:
            reply += s.recv(512)
    assert reply[:9] == exception_reply(30, 1, 0x5A, 1)
    assert reply[9:] == struct.pack(">HHHBBBH", 31, 0, 5, 1, 3, 2, 7)


@pytest.mark.parametrize("name,frame", DROPS, ids=[c[0] for c in DROPS])
def test_malformed_frame_drops_only_that_connection(served, name, frame):
    rig, plc = served
    assert exchange(rig.port, frame) == "closed"
    assert rig.service.server.dropped_connections >= 1
    assert plc.outputs()[Out.ACTIVE_RECIPE] == 7
    assert rig.service.server.registers.snapshot()[:4] == [plc.control, 0, 0, 0]


def test_truncated_frame_waits_without_blocking_others(served):
    rig, plc = served
    frame = read_req(40, 100, 2)
    with socket.create_connection(("127.0.0.1", rig.port), timeout=0.3) as stuck:
        stuck.sendall(frame[:9])  # header promises 6 bytes, 2 arrive
        with pytest.raises(TimeoutError):
            stuck.recv(64)
        # meanwhile the PLC runs a whole part
        plc.trigger(41)
        assert plc.take_result()[Out.RESULT_CODE] == 0
        stuck.sendall(frame[9:])  # the rest arrives: the request is then answered
        stuck.settimeout(1)
        reply = stuck.recv(64)
    assert reply[:2] == b"\x00\x28" and reply[7] == 3


def test_check_frame_pure():
    assert check_frame(b"\x00\x01\x00") is None  # incomplete header: wait
    assert check_frame(read_req(1, 100, 1)) is None  # fine: the server answers it
    assert check_frame(read_req(1, 100, 1)[:-1]) is None  # incomplete body: wait
    v = check_frame(mbap(1, 1, bytes([0x41])) + b"tail")
    assert v.exception == exception_reply(1, 1, 0x41, 1) and v.consumed == 8
