"""Issue 19, item 5: the Modbus server under crowding, with real sockets over loopback.

Idle connections are closed, a cap on concurrent connections refuses the extra ones at
connect, refusals are logged once per address per minute (with the count of the quiet ones),
clients that only read are paced, pipelined requests are answered in order. Behaviour, not
speed: the figures are `station plc bench --crowd 50` (docs/plc.md)."""

from __future__ import annotations

import logging
import socket
import struct
import time

from station.plc.registers import Out
from station.plc.server import RefusalLog
from tests.plc.conftest import wait_until


def read_frame(tid: int, address: int = 100, count: int = 18) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, address, count)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def ask(sock: socket.socket, tid: int, count: int = 18) -> bytes:
    sock.sendall(read_frame(tid, count=count))
    return recv_exactly(sock, 9 + 2 * count)


def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """True if the server closes ``sock`` within ``timeout_s`` (EOF or reset)."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=2)


def test_idle_connection_is_closed_and_a_busy_one_kept(make_rig):
    rig = make_rig(idle_timeout_ms=400)
    server = rig.service.server
    busy, idle, dribbling = connect(rig.port), connect(rig.port), connect(rig.port)
    try:
        wait_until(lambda: server.open_connections == 3)
        frame = read_frame(1)
        end = time.monotonic() + 1.5
        sent, dribble_cut = 0, False
        while time.monotonic() < end:
            assert ask(busy, 2)[7] == 3  # a request every 100 ms: never idle
            if sent < len(frame) - 1 and not dribble_cut:  # a byte now and then is not a request
                try:
                    dribbling.sendall(frame[sent : sent + 1])
                    sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    dribble_cut = True  # the server closed it already
            time.sleep(0.1)
        assert closed_by_server(idle, 3.0)
        assert dribble_cut or closed_by_server(dribbling, 3.0)
        assert ask(busy, 3)[7] == 3
        wait_until(lambda: server.idle_closed == 2 and server.open_connections == 1)
    finally:
        for s in (busy, idle, dribbling):
            s.close()


def test_extra_connections_are_refused_at_connect(make_rig):
    rig = make_rig(max_connections=3)
    server = rig.service.server
    plc = rig.master()  # 1
    plc.beat()
    others = [connect(rig.port), connect(rig.port)]  # 2, 3
    try:
        for i, s in enumerate(others):
            assert ask(s, 10 + i)[9 + 2 * Out.ACTIVE_RECIPE : 11 + 2 * Out.ACTIVE_RECIPE] == b"\x00\x07"
        extra = connect(rig.port)  # the TCP handshake completes; the server closes it at once
        try:
            extra.sendall(read_frame(20))
            assert closed_by_server(extra, 3.0)
        finally:
            extra.close()
        assert server.refused_full == 1 and server.refused_connections == 1
        assert plc.outputs()[Out.ACTIVE_RECIPE] == 7  # the PLC is still served
        others.pop().close()  # room again: the next client is let in
        wait_until(lambda: server.open_connections == 2)
        again = connect(rig.port)
        others.append(again)
        assert ask(again, 21)[7] == 3
    finally:
        for s in others:
            s.close()


def test_refusals_are_logged_once_per_address_per_minute(make_rig, caplog):
    rig = make_rig(max_connections=1)
    server = rig.service.server
    now = [1000.0]
    server.refusal_log.clock = lambda: now[0]  # the minute passes when the test says so
    plc = rig.master()
    plc.beat()

    def refuse(n: int) -> None:
        for _ in range(n):
            s = connect(rig.port)
            try:
                assert closed_by_server(s, 3.0)
            finally:
                s.close()

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "station.plc.server" and r.levelno == logging.WARNING and "refused" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="station.plc.server"):
        refuse(25)
        wait_until(lambda: server.refused_connections == 25)
        assert len(warnings()) == 1
        assert "127.0.0.1" in warnings()[0] and "plc.max_connections is 1" in warnings()[0]
        now[0] += 59.0
        refuse(5)
        wait_until(lambda: server.refused_connections == 30)
        assert len(warnings()) == 1  # still inside the minute
        now[0] += 2.0
        refuse(1)
        wait_until(lambda: server.refused_connections == 31)
        assert len(warnings()) == 2
        assert "29 more refused since the last report" in warnings()[1]
    assert plc.outputs()[Out.ACTIVE_RECIPE] == 7


def test_refusal_log_is_per_address_and_bounded():
    now = [0.0]
    log = RefusalLog(interval_s=60, max_addresses=3, clock=lambda: now[0])
    assert log.note("10.0.0.1") == 0 and log.note("10.0.0.2") == 0 and log.note("10.0.0.3") == 0
    assert log.note("10.0.0.1") is None
    # a fourth address while the table is full of fresh ones: one shared line per minute
    assert log.note("10.0.0.4") == 0 and log.note("10.0.0.5") is None
    now[0] = 61.0
    assert log.note("10.0.0.1") == 1  # one refusal went unlogged
    assert log.note("10.0.0.6") == 0  # old entries made room


def test_a_reader_is_paced_but_served(make_rig):
    """A client that never writes registers 0-3 gets one answer per plc.reader_interval_ms."""
    rig = make_rig(reader_interval_ms=200)
    reader = connect(rig.port)
    try:
        started = time.monotonic()
        for tid in range(6):
            assert ask(reader, tid)[:2] == struct.pack(">H", tid)
        assert time.monotonic() - started >= 5 * 0.2 * 0.95  # 6 answers: 5 intervals at least
    finally:
        reader.close()


def test_pipelined_requests_are_answered_in_order(make_rig):
    """Several requests in one segment, a write among them: every one answered, in order, and the
    read after the write sees what the station made of it (the station answers a write after
    taking it)."""
    rig = make_rig()
    with connect(rig.port) as s:
        write = struct.pack(">HHHBBHH", 2, 0, 6, 1, 6, 1, 7)  # RECIPE_ID := 7
        s.sendall(read_frame(1, 0, 4) + write + read_frame(3, 0, 4) + read_frame(4, 100, 1))
        first = recv_exactly(s, 9 + 8)
        echo = recv_exactly(s, 12)
        second = recv_exactly(s, 9 + 8)
        status = recv_exactly(s, 9 + 2)
    assert first[:2] == b"\x00\x01" and struct.unpack(">4H", first[9:])[1] == 0
    assert echo == write
    assert second[:2] == b"\x00\x03" and struct.unpack(">4H", second[9:])[1] == 7
    assert status[:2] == b"\x00\x04"


def test_a_reader_sending_ahead_is_still_answered_one_per_interval(make_rig):
    """Requests sent in one burst do not get around the pacing: each is answered at its time,
    in order, and the server does not read much further ahead than it answers."""
    rig = make_rig(reader_interval_ms=100)
    with connect(rig.port) as s:
        started = time.monotonic()
        s.sendall(b"".join(read_frame(tid, 100, 1) for tid in range(5)))
        answers = [recv_exactly(s, 11) for _ in range(5)]
        took = time.monotonic() - started
    assert [a[:2] for a in answers] == [struct.pack(">H", tid) for tid in range(5)]
    assert took >= 4 * 0.1 * 0.95
