"""Server mode: the station serves the register map over Modbus TCP (pymodbus 3.10.0).

pymodbus stays inside this module and client.py. Its server runs on its own asyncio loop in
one thread. Guards, all answered on the wire and never by changing a register:
- a client outside the allow-list is disconnected as soon as it connects;
- only function codes 3, 6, 16, 22 and 23 are served (others: ILLEGAL_FUNCTION);
- reads must stay inside 0..117, writes inside 0..3 (others: ILLEGAL_ADDRESS);
- a unit ID other than the configured one gets GATEWAY_NO_RESPONSE.
Writes to the input block are reported (``on_inputs``) after they are stored, once per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pymodbus.datastore import ModbusServerContext
from pymodbus.datastore.context import ModbusBaseDeviceContext
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from station.plc.registers import INPUT_BASE, INPUT_WORDS, OUTPUT_BASE, OUTPUT_WORDS

log = logging.getLogger("station.plc.server")

READ_CODES = {3}
WRITE_CODES = {6, 16, 22}
READ_WRITE_CODE = 23
SERVED_CODES = READ_CODES | WRITE_CODES | {READ_WRITE_CODE}
MAP_END = OUTPUT_BASE + OUTPUT_WORDS  # first address past the map


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


class GuardedRegisters(ModbusBaseDeviceContext):
    """Holding registers 0..117 behind one lock, so a PLC never reads a half-written output block."""

    def __init__(self, on_inputs: Callable[[list[int]], None]):
        self._lock = threading.Lock()
        self._words = [0] * MAP_END
        self._on_inputs = on_inputs

    def reset(self) -> None:
        with self._lock:
            self._words = [0] * MAP_END

    def getValues(self, fc_as_hex: int, address: int, count: int = 1) -> list[int]:  # noqa: N802 (pymodbus API)
        if fc_as_hex not in SERVED_CODES or not _inside(address, count, 0, MAP_END):
            # unreachable through the server (requests are checked first); guard for direct callers
            raise ValueError(f"read of {count} registers at {address} is outside the map")
        with self._lock:
            return self._words[address : address + count]

    def setValues(self, fc_as_hex: int, address: int, values: list[int]) -> int | None:  # noqa: N802
        if fc_as_hex not in WRITE_CODES | {READ_WRITE_CODE} or not _inside(address, len(values), INPUT_BASE, INPUT_BASE + INPUT_WORDS):
            return ExceptionResponse.ILLEGAL_ADDRESS
        with self._lock:
            self._words[address : address + len(values)] = [int(v) & 0xFFFF for v in values]
            inputs = self._words[INPUT_BASE : INPUT_BASE + INPUT_WORDS]
        self._on_inputs(inputs)
        return None

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


def request_problem(pdu: ModbusPDU) -> int | None:
    """The Modbus exception code a request must get before it touches the registers, or None."""
    fc = pdu.function_code
    if fc not in SERVED_CODES:
        return ExceptionResponse.ILLEGAL_FUNCTION
    if fc == READ_WRITE_CODE:
        read_ok = _inside(pdu.read_address, pdu.read_count, 0, MAP_END)
        write_ok = _inside(pdu.write_address, len(pdu.write_registers), INPUT_BASE, INPUT_BASE + INPUT_WORDS)
        return None if read_ok and write_ok else ExceptionResponse.ILLEGAL_ADDRESS
    if fc in READ_CODES:
        return None if _inside(pdu.address, pdu.count, 0, MAP_END) else ExceptionResponse.ILLEGAL_ADDRESS
    count = len(pdu.registers) if fc == 16 else 1
    return None if _inside(pdu.address, count, INPUT_BASE, INPUT_BASE + INPUT_WORDS) else ExceptionResponse.ILLEGAL_ADDRESS


MBAP_HEADER = 7  # transaction ID, protocol ID, length, unit ID
MAX_MBAP_LENGTH = 254  # unit ID + PDU (253): a 260-byte ADU


@dataclass(frozen=True)
class FrameVerdict:
    """What to do with the frame at the head of a receive buffer (see ``check_frame``)."""

    drop: str | None = None  # reason to drop the connection
    exception: bytes | None = None  # a complete exception response to send instead of serving
    consumed: int = 0  # bytes of the buffer the frame used


def check_frame(buffer: bytes) -> FrameVerdict | None:
    """Pre-screen raw Modbus TCP bytes before pymodbus decodes them.

    pymodbus 3.10.0 answers an unknown function code with a malformed exception (function
    0xA8, transaction 0), accepts non-zero protocol IDs and waits forever on impossible
    lengths; it also ignores a write request's byte count. Returns None when the frame is
    incomplete or fine for pymodbus, else a verdict: drop the connection, or answer with this
    exception (echoing the transaction and unit ID) and skip the frame.
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
        code = ExceptionResponse.ILLEGAL_FUNCTION
    elif fc == 16 and (len(body) < 5 or body[4] != 2 * struct.unpack(">H", body[2:4])[0] or len(body) != 5 + body[4]):
        code = ExceptionResponse.ILLEGAL_VALUE
    elif fc == 23 and (len(body) < 9 or body[8] != 2 * struct.unpack(">H", body[6:8])[0] or len(body) != 9 + body[8]):
        code = ExceptionResponse.ILLEGAL_VALUE
    elif fc in (3, 6) and len(body) != 4:
        code = ExceptionResponse.ILLEGAL_VALUE
    elif fc == 22 and len(body) != 6:
        code = ExceptionResponse.ILLEGAL_VALUE
    if code is None:
        return None
    response = struct.pack(">HHHBBB", tid, 0, 3, unit, (fc | 0x80) & 0xFF, code)
    return FrameVerdict(exception=response, consumed=end)


class _RefusedRequest(ModbusPDU):
    """Stands in for a request that must not reach the registers; answers with an exception."""

    def __init__(self, request: ModbusPDU, exception_code: int):
        super().__init__(dev_id=request.dev_id, transaction_id=request.transaction_id)
        self.function_code = request.function_code
        self.refusal = exception_code

    async def update_datastore(self, context) -> ModbusPDU:  # noqa: ARG002 (pymodbus API)
        return ExceptionResponse(self.function_code, self.refusal)

    def encode(self) -> bytes:
        return b""

    def decode(self, data: bytes) -> None:
        pass


class _GuardedHandler(ServerRequestHandler):
    """One client connection: refused at connect time if its address is not allowed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server: RegisterTcpServer = self.server
        peer = transport.get_extra_info("peername") or ("?", 0)
        if not client_allowed(str(peer[0]), server.allow):
            server.refused_connections += 1
            # a scanner must not flood the log: warn once per address, then count
            level = logging.DEBUG if peer[0] in server.refused_addresses else logging.WARNING
            server.refused_addresses.add(peer[0])
            log.log(level, "PLC server: connection from %s refused (not in plc.allow)", peer[0])
            transport.abort()
            if self.listener is not None:
                self.listener.active_connections.pop(self.unique_id, None)
            return
        server.connections += 1
        log.info("PLC server: client %s:%s connected", peer[0], peer[1])
        super().connection_made(transport)

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        server: RegisterTcpServer = self.server
        used = 0
        while (verdict := check_frame(data[used:])) is not None:
            if verdict.drop is not None:
                server.dropped_connections += 1
                log.warning("PLC server: dropping a connection: %s", verdict.drop)
                self.close()
                return len(data)
            server.refused_frames += 1
            self.transport.write(verdict.exception)
            used += verdict.consumed
        if used < len(data):
            used += super().callback_data(data[used:], addr)
        return used


class RegisterTcpServer(ModbusTcpServer):
    def __init__(self, *args, allow, **kwargs):
        super().__init__(*args, **kwargs)
        self.allow = allow
        self.refused_connections = 0
        self.refused_addresses: set[str] = set()
        self.dropped_connections = 0
        self.refused_frames = 0
        self.connections = 0

    def callback_new_connection(self):
        return _GuardedHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class RegisterServer:
    """The station's Modbus TCP server in its own thread.

    ``on_inputs(words)`` runs on the server thread after each write to registers 0–3, with the
    4 input words; ``on_request()`` after each request addressed to our unit ID. Both must be quick.
    """

    def __init__(
        self,
        host: str,
        port: int,
        unit_id: int,
        allow: Sequence[str],
        on_inputs: Callable[[list[int]], None],
        on_request: Callable[[], None],
    ):
        self.host, self.port, self.unit_id = host, port, unit_id
        self.allow = parse_allow_list(allow)
        self.registers = GuardedRegisters(on_inputs)
        self._on_request = on_request
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: RegisterTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.requests = 0
        self.refused_requests = 0

    @property
    def refused_connections(self) -> int:
        """Connections closed at once because the client is not in the allow-list."""
        return self._server.refused_connections if self._server else 0

    @property
    def dropped_connections(self) -> int:
        """Connections closed because they sent bytes that are not Modbus TCP."""
        return self._server.dropped_connections if self._server else 0

    @property
    def refused_frames(self) -> int:
        """Frames answered with an exception before pymodbus decoded them."""
        return self._server.refused_frames if self._server else 0

    def start(self, timeout_s: float = 5.0) -> None:
        """Bind and listen; raises RuntimeError naming the address and the OS reason if it cannot."""
        self._probe_bind()
        self._thread = threading.Thread(target=self._run, name="plc-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError(f"PLC server on {self.host}:{self.port} did not start within {timeout_s} s")
        if self._start_error is not None:
            raise RuntimeError(f"PLC server cannot listen on {self.host}:{self.port}: {self._start_error}") from self._start_error

    def _probe_bind(self) -> None:
        # pymodbus only logs the OS error and raises "Could not start listen"; find the reason first
        import socket

        try:
            infos = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" if self.port < 1024 else ""
            raise RuntimeError(f"PLC server cannot listen on {self.host}:{self.port}: {exc.strerror or exc}{hint}") from None

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(server.shutdown(), loop)
            try:
                fut.result(timeout_s)
            except Exception:  # already closing; the thread join below is what matters
                log.debug("PLC server shutdown", exc_info=True)
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
        context = ModbusServerContext(devices={self.unit_id: self.registers}, single=False)
        self._server = RegisterTcpServer(
            context, address=(self.host, self.port), allow=self.allow, trace_pdu=self._trace_pdu
        )
        await self._server.serve_forever(background=True)
        self._started.set()
        log.info("PLC server listening on %s:%d (unit %d)", self.host, self.port, self.unit_id)
        await self._server.serving
        self._server.close()
        await asyncio.sleep(0)

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            return pdu
        self.requests += 1
        if pdu.dev_id != self.unit_id:
            return pdu  # the server context answers GATEWAY_NO_RESPONSE
        problem = request_problem(pdu)
        if problem is not None:
            self.refused_requests += 1
            log.info("PLC server: refused function %d at %d (exception %d)", pdu.function_code, pdu.address, problem)
            self._on_request()
            return _RefusedRequest(pdu, problem)
        self._on_request()
        return pdu


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
