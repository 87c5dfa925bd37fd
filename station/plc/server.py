"""Server mode: the station serves the register map over Modbus TCP (asyncio, one thread).

Requests are answered here, synchronously and in arrival order, straight from the register
block. pymodbus 3.10's server was used before; under 50 clients polling at full speed it spent
about 200 µs of the one server thread per request (a task and a cross-thread wake-up of its own
loop per request, PDU objects both ways), served one frame per received chunk and answered
malformed frames wrongly; this map is 118 words and five function codes (docs/plc.md,
"Crowding"). Guards, all answered on the wire and never by changing a register:
- a client outside the allow-list, or beyond ``max_connections``, is disconnected as soon as
  it connects (logged once per address per minute);
- a connection without a request for ``idle_timeout_s`` is closed;
- only function codes 3, 6, 16, 22 and 23 are served (others: ILLEGAL_FUNCTION);
- reads must stay inside 0..117, writes inside 0..3 (others: ILLEGAL_ADDRESS);
- a unit ID other than the configured one gets GATEWAY_NO_RESPONSE;
- bytes that are not Modbus TCP drop that connection; a client that does not read its
  answers is dropped before they pile up in memory.
Writes to the input block are reported (``on_inputs``) after they are stored and before the
answer is sent, once per request.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from station.plc.registers import INPUT_BASE, INPUT_WORDS, OUTPUT_BASE, OUTPUT_WORDS

log = logging.getLogger("station.plc.server")

READ_CODES = {3}
WRITE_CODES = {6, 16, 22}
READ_WRITE_CODE = 23
SERVED_CODES = READ_CODES | WRITE_CODES | {READ_WRITE_CODE}
MAP_END = OUTPUT_BASE + OUTPUT_WORDS  # first address past the map

# Modbus exception codes
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE, GATEWAY_NO_RESPONSE = 1, 2, 3, 4, 0x0B

MAX_UNREAD_ANSWER_BYTES = 64 * 1024  # a client this far behind reading its answers is dropped
DRAIN_BATCH = 4  # other clients answered per turn of the event loop (see RegisterServer._drain)
MAX_WAITING_REQUEST_BYTES = 4096  # a reader's requests not answered yet; beyond, its socket is not read


def parse_allow_list(entries: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Client addresses or networks ("10.0.0.5", "10.0.0.0/24"); raises ValueError naming a bad entry."""
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"plc.allow: {entry!r} is not an IP address or network") from None
    return nets


def client_allowed(peer_ip: str, allow: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not allow:
        return True
    try:
        ip = ipaddress.ip_address(peer_ip.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in allow)


class GuardedRegisters:
    """Holding registers 0..117 behind one lock, so a PLC never reads a half-written output block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._words = [0] * MAP_END

    def reset(self) -> None:
        with self._lock:
            self._words = [0] * MAP_END

    def read(self, address: int, count: int) -> list[int]:
        with self._lock:
            return self._words[address : address + count]

    def write_inputs(self, address: int, values: Sequence[int]) -> list[int]:
        """Store words inside the input block; returns the whole input block after the write."""
        if not _inside(address, len(values), INPUT_BASE, INPUT_BASE + INPUT_WORDS):
            raise ValueError(f"write of {len(values)} registers at {address} is outside the input block")
        with self._lock:
            self._words[address : address + len(values)] = [int(v) & 0xFFFF for v in values]
            return self._words[INPUT_BASE : INPUT_BASE + INPUT_WORDS]

    def mask_write_input(self, address: int, and_mask: int, or_mask: int) -> list[int]:
        """Function 22 on one input word: (current AND and_mask) OR (or_mask AND NOT and_mask)."""
        if not _inside(address, 1, INPUT_BASE, INPUT_BASE + INPUT_WORDS):
            raise ValueError(f"mask write at {address} is outside the input block")
        with self._lock:
            self._words[address] = (self._words[address] & and_mask) | (or_mask & ~and_mask & 0xFFFF)
            return self._words[INPUT_BASE : INPUT_BASE + INPUT_WORDS]

    def write_outputs(self, words: list[int]) -> None:
        """Replace the whole output block in one step (readers see all old or all new words)."""
        if len(words) != OUTPUT_WORDS:
            raise ValueError(f"output block has {OUTPUT_WORDS} words, got {len(words)}")
        with self._lock:
            self._words[OUTPUT_BASE:MAP_END] = words

    def snapshot(self) -> list[int]:
        with self._lock:
            return list(self._words)


def _inside(address: int, count: int, start: int, end: int) -> bool:
    return count >= 1 and start <= address and address + count <= end


MBAP_HEADER = 7  # transaction ID, protocol ID, length, unit ID
MAX_MBAP_LENGTH = 254  # unit ID + PDU (253): a 260-byte ADU


@dataclass(frozen=True)
class FrameVerdict:
    """What to do with the frame at the head of a receive buffer (see ``check_frame``)."""

    drop: str | None = None  # reason to drop the connection
    exception: bytes | None = None  # a complete exception response to send instead of serving
    consumed: int = 0  # bytes of the buffer the frame used


def exception_frame(tid: int, unit: int, fc: int, code: int) -> bytes:
    return struct.pack(">HHHBBB", tid, 0, 3, unit, (fc | 0x80) & 0xFF, code)


def check_frame(buffer: bytes | memoryview) -> FrameVerdict | None:
    """Pre-screen raw Modbus TCP bytes before a request is served.

    Returns None when the frame is incomplete or well-formed (``frame_length`` tells which),
    else a verdict: drop the connection (non-zero protocol ID, impossible length), or answer
    with this exception (unknown function code, a byte count that does not match the register
    count, a body of the wrong length) echoing the transaction and unit ID, and skip the frame.
    """
    if len(buffer) < MBAP_HEADER:
        return None
    tid, pid, length, unit = struct.unpack(">HHHB", buffer[:MBAP_HEADER])
    if pid != 0:
        return FrameVerdict(drop=f"protocol ID {pid} is not Modbus (0)")
    if not 2 <= length <= MAX_MBAP_LENGTH:
        return FrameVerdict(drop=f"MBAP length {length} outside 2..{MAX_MBAP_LENGTH}")
    end = 6 + length
    if len(buffer) < end:
        return None
    fc, body = buffer[MBAP_HEADER], buffer[MBAP_HEADER + 1 : end]
    code = None
    if fc not in SERVED_CODES:
        code = ILLEGAL_FUNCTION
    elif fc == 16 and (len(body) < 5 or body[4] != 2 * struct.unpack(">H", body[2:4])[0] or len(body) != 5 + body[4]):
        code = ILLEGAL_VALUE
    elif fc == 23 and (len(body) < 9 or body[8] != 2 * struct.unpack(">H", body[6:8])[0] or len(body) != 9 + body[8]):
        code = ILLEGAL_VALUE
    elif fc in (3, 6) and len(body) != 4:
        code = ILLEGAL_VALUE
    elif fc == 22 and len(body) != 6:
        code = ILLEGAL_VALUE
    if code is None:
        return None
    return FrameVerdict(exception=exception_frame(tid, unit, fc, code), consumed=end)


def frame_length(buffer: bytes | memoryview) -> int | None:
    """Length of the complete frame at the head of ``buffer`` (checked by ``check_frame``), or None."""
    if len(buffer) < MBAP_HEADER:
        return None
    end = 6 + ((buffer[4] << 8) | buffer[5])
    return end if len(buffer) >= end else None


def _holds_frame(buffer: bytes) -> bool:
    """True if the head of ``buffer`` is a complete frame (good or bad) to act on."""
    return check_frame(buffer) is not None or frame_length(buffer) is not None


def answer_request(frame: bytes, unit_id: int, registers: GuardedRegisters,
                   on_write: Callable[[list[int]], None]) -> tuple[bytes, bool]:
    """(response, refused) for one well-formed request frame (``check_frame`` passed it).

    A write is stored, then ``on_write(input block)`` runs, then the answer is built, so a read
    in the same request (function 23) and any later request see what the station made of it.
    ``refused``: answered ILLEGAL_ADDRESS."""
    tid, _, _, unit, fc = struct.unpack(">HHHBB", frame[:8])
    if unit != unit_id:
        return exception_frame(tid, unit, fc, GATEWAY_NO_RESPONSE), False
    refused = exception_frame(tid, unit, fc, ILLEGAL_ADDRESS), True
    if fc == 3:
        address, count = struct.unpack(">HH", frame[8:12])
        if not _inside(address, count, 0, MAP_END):
            return refused
        return _read_response(tid, unit, fc, registers.read(address, count)), False
    if fc == 6:
        address, value = struct.unpack(">HH", frame[8:12])
        if not _inside(address, 1, INPUT_BASE, INPUT_BASE + INPUT_WORDS):
            return refused
        on_write(registers.write_inputs(address, [value]))
        return bytes(frame), False  # the answer echoes the request
    if fc == 16:
        address, count = struct.unpack(">HH", frame[8:12])
        if not _inside(address, count, INPUT_BASE, INPUT_BASE + INPUT_WORDS):
            return refused
        on_write(registers.write_inputs(address, struct.unpack(f">{count}H", frame[13 : 13 + 2 * count])))
        return struct.pack(">HHHBBHH", tid, 0, 6, unit, fc, address, count), False
    if fc == 22:
        address, and_mask, or_mask = struct.unpack(">HHH", frame[8:14])
        if not _inside(address, 1, INPUT_BASE, INPUT_BASE + INPUT_WORDS):
            return refused
        on_write(registers.mask_write_input(address, and_mask, or_mask))
        return bytes(frame), False
    # 23: write first, then read (Modbus application protocol, 6.17)
    read_address, read_count, write_address, write_count = struct.unpack(">HHHH", frame[8:16])
    if not (_inside(read_address, read_count, 0, MAP_END)
            and _inside(write_address, write_count, INPUT_BASE, INPUT_BASE + INPUT_WORDS)):
        return refused
    on_write(registers.write_inputs(write_address, struct.unpack(f">{write_count}H", frame[17 : 17 + 2 * write_count])))
    return _read_response(tid, unit, fc, registers.read(read_address, read_count)), False


def _read_response(tid: int, unit: int, fc: int, words: list[int]) -> bytes:
    n = len(words)
    return struct.pack(f">HHHBBB{n}H", tid, 0, 3 + 2 * n, unit, fc, 2 * n, *words)


class RefusalLog:
    """Decides which refused connections are worth a log line: the first from an address, then
    at most one per ``interval_s`` with the number left unlogged since. A scanner or a crowd
    of reconnecting clients must not flood the log. Times in seconds (monotonic)."""

    def __init__(self, interval_s: float = 60.0, max_addresses: int = 1024, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # address -> (last logged at, refused since)

    def note(self, address: str) -> int | None:
        """Count a refusal from ``address``; returns None to stay quiet, else the number of
        refusals from it that were not logged before this one."""
        now = self.clock()
        if address not in self._seen and len(self._seen) >= self.max_addresses:
            self._seen = {a: v for a, v in self._seen.items() if now - v[0] < self.interval_s}
            if len(self._seen) >= self.max_addresses:
                address = "other addresses"  # beyond the table: one shared line per interval
        logged_at, quiet = self._seen.get(address, (None, 0))
        if logged_at is not None and now - logged_at < self.interval_s:
            self._seen[address] = (logged_at, quiet + 1)
            return None
        self._seen[address] = (now, 0)
        return quiet


class _Connection(asyncio.Protocol):
    """One client connection; everything runs on the server's event loop."""

    def __init__(self, server: "RegisterServer"):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buffer = b""
        self.last_request = 0.0  # loop time of the last complete frame (or of the connect)
        # a client whose write to the input block was taken is the PLC: its requests are
        # answered as they arrive; the others' wait for a slot between the loop's polls
        self.plc = False
        self.waiting = False  # in the server's queue of readers to answer
        self.paced = False  # a timer will queue it when its reader interval has passed
        self.next_answer_at = 0.0
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        if not client_allowed(str(peer[0]), server.allow):
            server.refuse(transport, str(peer[0]), "not in plc.allow")
            return
        if len(server.open) >= server.max_connections:
            server.refused_full += 1
            server.refuse(transport, str(peer[0]), f"{len(server.open)} connections open, plc.max_connections is {server.max_connections}")
            return
        server.open.add(self)
        server.connections += 1
        self.last_request = server.loop_time()
        log.info("PLC server: client %s connected (%d open)", self.peer, len(server.open))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)
        self.transport = None

    def close(self, reason: str) -> None:
        self.server.open.discard(self)
        if self.transport is not None:
            log.info("PLC server: closing the connection from %s: %s", self.peer, reason)
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self not in self.server.open:  # refused at connect; anything it sent is ignored
            return
        self.buffer = self.buffer + data if self.buffer else data
        if self.plc:
            self.serve_buffer()
            return
        if len(self.buffer) > MAX_WAITING_REQUEST_BYTES and not self.reading_paused:
            self.transport.pause_reading()  # a reader sending far ahead of its answers waits for them
            self.reading_paused = True
        self.schedule()

    def schedule(self) -> None:
        """Queue this reader for an answer: now, or when its reader interval has passed."""
        if self.paced or self.waiting:
            return
        wait = self.next_answer_at - self.server.loop_time()
        if wait > 0:  # a reader asking faster than plc.reader_interval_ms: answered on time, not sooner
            self.paced = True
            self.server.call_later(wait, self.serve_paced)
        else:
            self.server.serve_soon(self)

    def serve_paced(self) -> None:
        self.paced = False
        if self.transport is not None:
            self.server.serve_soon(self)

    def serve_buffer(self) -> None:
        """Answer the complete frames received so far, in order: all of them for the PLC, one
        per reader interval for a reader (0: all)."""
        one_only = not self.plc and self.server.reader_interval_s > 0
        buffer = self.buffer
        view = memoryview(buffer)  # frames are cut from it without copying the rest each time
        used = 0
        server = self.server
        while True:
            verdict = check_frame(view[used:])
            if verdict is not None:
                if verdict.drop is not None:
                    server.dropped_connections += 1
                    log.warning("PLC server: dropping the connection from %s: %s", self.peer, verdict.drop)
                    self.buffer = b""
                    self.close(verdict.drop)
                    return
                server.refused_frames += 1
                self.transport.write(verdict.exception)
                used += verdict.consumed
                continue
            end = frame_length(view[used:])
            if end is None:
                break
            response = server.serve(bytes(view[used : used + end]))
            self.plc = self.plc or response[7] in WRITE_CODES | {READ_WRITE_CODE}  # a write was taken
            self.transport.write(response)
            used += end
            if one_only and not self.plc:
                break
        if used:
            self.last_request = server.loop_time()
            if not self.plc:
                self.next_answer_at = self.last_request + server.reader_interval_s
        self.buffer = buffer[used:]
        if self.transport is None:
            return
        if self.transport.get_write_buffer_size() > MAX_UNREAD_ANSWER_BYTES:
            server.dropped_connections += 1
            self.close(f"more than {MAX_UNREAD_ANSWER_BYTES} bytes of answers not read")
            return
        if self.reading_paused and len(self.buffer) <= MAX_WAITING_REQUEST_BYTES:
            self.transport.resume_reading()
            self.reading_paused = False
        if not self.plc and self.buffer and _holds_frame(self.buffer):
            self.schedule()  # more requests already here: the next one at its time


class RegisterServer:
    """The station's Modbus TCP server in its own thread.

    ``on_inputs(words)`` runs on the server thread after each write to registers 0–3, with the
    4 input words; ``on_request()`` after each request addressed to our unit ID. Both must be quick.
    ``max_connections`` clients at once; a connection without a request for ``idle_timeout_s`` is closed.
    """

    def __init__(
        self,
        host: str,
        port: int,
        unit_id: int,
        allow: Sequence[str],
        on_inputs: Callable[[list[int]], None],
        on_request: Callable[[], None],
        max_connections: int = 16,
        idle_timeout_s: float = 60.0,
        reader_interval_s: float = 0.0,
        refusal_log: RefusalLog | None = None,
    ):
        self.host, self.port, self.unit_id = host, port, unit_id
        self.allow = parse_allow_list(allow)
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.reader_interval_s = reader_interval_s
        self.registers = GuardedRegisters()
        self.refusal_log = refusal_log or RefusalLog()
        self._on_inputs = on_inputs
        self._on_request = on_request
        self.open: set[_Connection] = set()
        self._waiting: collections.deque[_Connection] = collections.deque()
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        # counters (read from other threads; written on the server thread only)
        self.requests = 0  # requests served or refused with an address exception
        self.refused_requests = 0  # requests answered ILLEGAL_ADDRESS
        self.refused_connections = 0  # closed at connect: not in plc.allow, or too many open
        self.refused_full = 0  # of those: because max_connections were open
        self.dropped_connections = 0  # closed because they sent bytes that are not Modbus TCP (or did not read)
        self.refused_frames = 0  # frames answered with an exception before they were served
        self.idle_closed = 0  # closed for want of requests
        self.connections = 0  # accepted connections since start

    @property
    def open_connections(self) -> int:
        return len(self.open)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._loop.call_later(delay_s, callback)

    def loop_time(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self, timeout_s: float = 5.0) -> None:
        """Bind and listen; raises RuntimeError naming the address and the OS reason if it cannot."""
        self._thread = threading.Thread(target=self._run, name="plc-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError(f"PLC server on {self.host}:{self.port} did not start within {timeout_s} s")
        if self._start_error is not None:
            exc = self._start_error
            # asyncio words a bind error as "error while attempting to bind on address ...": say it plainly
            reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" if self.port < 1024 and isinstance(exc, PermissionError) else ""
            raise RuntimeError(f"PLC server cannot listen on {self.host}:{self.port}: {reason}{hint}") from None

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and loop.is_running():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def write_outputs(self, words: list[int]) -> None:
        self.registers.write_outputs(words)

    # ---- server thread --------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 (reported to start())
            self._start_error = exc
            self._started.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), self.host or None, self.port, reuse_address=True
        )
        self._started.set()
        log.info("PLC server listening on %s:%d (unit %d, at most %d clients, idle timeout %g s)",
                 self.host, self.port, self.unit_id, self.max_connections, self.idle_timeout_s)
        sweeper = asyncio.ensure_future(self._close_idle())
        try:
            await self._stopping.wait()
        finally:
            sweeper.cancel()
            server.close()
            for conn in list(self.open):
                conn.close("server stopping")
            await server.wait_closed()

    async def _close_idle(self) -> None:
        period = min(1.0, self.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            now = self.loop_time()
            for conn in [c for c in self.open if now - c.last_request > self.idle_timeout_s]:
                self.idle_closed += 1
                conn.close(f"no request for {self.idle_timeout_s:g} s")

    def refuse(self, transport: asyncio.BaseTransport, address: str, reason: str) -> None:
        self.refused_connections += 1
        unlogged = self.refusal_log.note(address)
        if unlogged is not None:
            more = f"; {unlogged} more refused since the last report" if unlogged else ""
            log.warning("PLC server: connection from %s refused (%s)%s", address, reason, more)
        transport.abort()

    def serve_soon(self, conn: _Connection) -> None:
        """Answer ``conn`` after whatever the PLC sent meanwhile (see ``_drain``)."""
        if not conn.waiting:
            conn.waiting = True
            self._waiting.append(conn)
        if not self._draining:
            self._draining = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        # A few clients per turn of the event loop, which polls the sockets between turns: the
        # PLC's request never waits behind more than DRAIN_BATCH other clients' (measured:
        # 50 clients polling flat out otherwise add their whole round to each PLC request).
        for _ in range(min(DRAIN_BATCH, len(self._waiting))):
            conn = self._waiting.popleft()
            conn.waiting = False
            if conn.transport is not None:
                conn.serve_buffer()
        if self._waiting:
            self._loop.call_soon(self._drain)
        else:
            self._draining = False

    def serve(self, frame: bytes) -> bytes:
        """Answer one well-formed request frame; reports writes and requests to the station."""
        self.requests += 1
        try:
            response, refused = answer_request(frame, self.unit_id, self.registers, self._on_inputs)
            if frame[6] != self.unit_id:
                return response
            if refused:
                self.refused_requests += 1
                log.info("PLC server: refused function %d at %d (illegal address)", frame[7], struct.unpack(">H", frame[8:10])[0])
            self._on_request()
        except Exception:  # the station failed to take the request: say so, keep serving
            log.exception("PLC server: the station could not take a request")
            return exception_frame(*struct.unpack(">HxxxxBB", frame[:8]), DEVICE_FAILURE)
        return response


def wait_listening(host: str, port: int, timeout_s: float = 5.0) -> bool:
    """True once a TCP connection to host:port succeeds (for tests and the bench)."""
    import socket

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False
