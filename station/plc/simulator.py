"""A simulated PLC for the demo: a Modbus TCP master that drives the station's handshake.

It plays the line's PLC against the station's own Modbus server (server mode): toggles its
heartbeat, triggers a part every ``interval_s`` (part ID, then a TRIGGER rising edge, drop
on TRIGGER_ACK / TRIGGER_FAILED) and acknowledges every presented result (RESULT_ACK until
RESULT_VALID drops). With ``max_outstanding`` it paces the line to the station, as a line
with that many parts in the cell would: no trigger while that many results are outstanding.
One polling loop at ``poll_s``; reconnects with backoff if the station goes away. It never
decides anything: it only does what a real PLC program would.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from station.plc.registers import INPUT_BASE, OUTPUT_BASE, OUTPUT_WORDS, Control, In, Out, Status, join_u32, split_u32

log = logging.getLogger("station.plc.simulator")


@dataclass
class SimulatedPlcCounts:
    triggered: int = 0
    refused: int = 0
    passed: int = 0
    rejected: int = 0
    results: list[tuple[int, int, int]] = field(default_factory=list)  # (sequence, part_id, result code)


class PlcSimulator:
    def __init__(self, host: str, port: int, interval_s: float = 0.5, poll_s: float = 0.01, unit: int = 1,
                 max_outstanding: int | None = None, max_parts: int | None = None):
        self.host, self.port, self.unit = host, port, unit
        self.interval_s = interval_s
        self.max_outstanding = max_outstanding
        self.max_parts = max_parts  # parts the station accepted, then no more triggers (None: no end)
        self.poll_s = poll_s
        self.counts = SimulatedPlcCounts()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._control = 0
        self._part_id = 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="plc-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _write_control(self, client: ModbusTcpClient, control: int) -> None:
        self._control = control & 0xFFFF
        rr = client.write_register(INPUT_BASE + In.CONTROL, self._control, device_id=self.unit)
        if rr.isError():
            raise ModbusException(f"write control refused: {rr}")

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            client = ModbusTcpClient(self.host, port=self.port, timeout=1, retries=0)
            try:
                if not client.connect():
                    raise ModbusException(f"cannot connect to {self.host}:{self.port}")
                backoff = 0.1
                self._session(client)
            except (ModbusException, OSError) as exc:
                log.warning("simulated PLC: %s; retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                client.close()

    def _session(self, client: ModbusTcpClient) -> None:
        self._write_control(client, 0)
        next_part_s = time.monotonic()
        outstanding = 0  # triggered and acknowledged, result not yet presented
        last_beat_s = 0.0
        triggering = acking = False
        while not self._stop.is_set():
            now = time.monotonic()
            rr = client.read_holding_registers(OUTPUT_BASE, count=OUTPUT_WORDS, device_id=self.unit)
            if rr.isError():
                raise ModbusException(f"read status refused: {rr}")
            out = rr.registers
            status = Status(out[Out.STATUS])
            control = self._control
            if now - last_beat_s >= 0.1:
                control ^= Control.HEARTBEAT
                last_beat_s = now
            # trigger handshake
            if triggering and status & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED):
                if status & Status.TRIGGER_FAILED:
                    self.counts.refused += 1
                else:
                    outstanding += 1
                control &= ~Control.TRIGGER
                triggering = False
            elif not triggering and not control & Control.TRIGGER and not status & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED):
                paced = self.max_outstanding is not None and outstanding >= self.max_outstanding
                if self.max_parts is not None and self.counts.triggered - self.counts.refused >= self.max_parts:
                    paced = True  # enough parts: go on acknowledging results, trigger no more
                if now >= next_part_s and status & Status.READY and not paced:
                    hi, lo = split_u32(self._part_id)
                    client.write_registers(INPUT_BASE + In.PART_ID_HI, [hi, lo], device_id=self.unit)
                    control |= Control.TRIGGER
                    triggering = True
                    self.counts.triggered += 1
                    self._part_id += 1
                    next_part_s = max(next_part_s + self.interval_s, now)
            # result handshake
            if not acking and status & Status.RESULT_VALID:
                code = out[Out.RESULT_CODE]
                self.counts.results.append((out[Out.SEQUENCE], join_u32(out[Out.PART_ID_HI], out[Out.PART_ID_LO]), code))
                del self.counts.results[:-1000]
                if status & Status.PASS:
                    self.counts.passed += 1
                else:
                    self.counts.rejected += 1
                control |= Control.RESULT_ACK
                acking = True
                outstanding = max(0, outstanding - 1)
            elif acking and not status & Status.RESULT_VALID:
                control &= ~Control.RESULT_ACK
                acking = False
            if control != self._control:
                self._write_control(client, control)
            self._stop.wait(self.poll_s)
