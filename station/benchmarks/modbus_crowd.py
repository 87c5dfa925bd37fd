"""A crowd of Modbus TCP clients polling a server at full speed, in a process of its own.

Each client reads the station's output block (function 3, registers 100..117) and sends the
next request the moment the answer arrives: the load a SCADA, a historian and a few curious
engineer laptops put on the station when they all poll it. Raw asyncio sockets with a
pre-built request, so one process can keep the server busier than pymodbus clients could,
and in its own process so its CPU time is not taken from the station's Python threads (it
still shares the machine's cores, as external clients on the same box would).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import struct

from station.plc.registers import OUTPUT_BASE, OUTPUT_WORDS

REQUEST = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, OUTPUT_BASE, OUTPUT_WORDS)
RESPONSE_BYTES = 9 + 2 * OUTPUT_WORDS  # MBAP 7 + function + byte count + words


class _Poller(asyncio.Protocol):
    def __init__(self, counts: list[int], index: int):
        self.counts, self.index = counts, index
        self.pending = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.pending >= RESPONSE_BYTES:  # one answer complete: ask again at once
            self.pending -= RESPONSE_BYTES
            self.counts[self.index] += 1
            self.transport.write(REQUEST)

    def connection_lost(self, exc) -> None:
        self.transport = None


async def _crowd(host: str, port: int, clients: int, ready, stop, counts_out) -> None:
    loop = asyncio.get_running_loop()
    counts = [0] * clients
    pollers = []
    for i in range(clients):
        _, proto = await loop.create_connection(lambda i=i: _Poller(counts, i), host, port)
        pollers.append(proto)
    ready.set()
    started = loop.time()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    elapsed = loop.time() - started
    for p in pollers:
        if p.transport is not None:
            p.transport.close()
    await asyncio.sleep(0.05)
    counts_out.extend([sum(counts), elapsed])


def _main(host: str, port: int, clients: int, ready, stop, result) -> None:
    out: list[int] = []
    asyncio.run(_crowd(host, port, clients, ready, stop, out))
    result.put(out)


class ModbusCrowd:
    """``with ModbusCrowd(host, port, 50) as crowd: ...``; afterwards ``crowd.requests`` (answered)
    and ``crowd.requests_per_s`` (over the time all clients were connected)."""

    def __init__(self, host: str, port: int, clients: int):
        ctx = mp.get_context("spawn")  # never fork a process that has server threads
        self._ready, self._stop, self._result = ctx.Event(), ctx.Event(), ctx.Queue()
        self._proc = ctx.Process(target=_main, args=(host, port, clients, self._ready, self._stop, self._result),
                                 name="modbus-crowd", daemon=True)
        self.clients = clients
        self.requests = 0
        self.requests_per_s = 0.0

    def __enter__(self) -> "ModbusCrowd":
        self._proc.start()
        if not self._ready.wait(60):
            self._proc.kill()
            raise RuntimeError(f"the crowd of {self.clients} clients did not connect")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            self.requests, seconds = self._result.get(timeout=30)
            self.requests_per_s = self.requests / seconds if seconds else 0.0
        finally:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()


__all__ = ["ModbusCrowd"]
