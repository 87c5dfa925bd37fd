"""Client mode: the station polls the PLC's holding registers (pymodbus 3.10.0 sync client).

Every ``poll_period_ms`` (≤ 10 ms): read the 4-word input block at ``input_base``, hand it to
the service, write back whatever changed in the 18-word output block at ``output_base``. The
result words are written before the status word, so the PLC never sees RESULT_VALID over
stale words; only when RESULT_VALID drops does the status word go first. A lost connection is retried with the
configured backoff (the last step repeats); the loop sleeps to the next period, never spins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from station.config import PlcConfig
from station.plc.registers import INPUT_WORDS, Out, Status

log = logging.getLogger("station.plc.client")


class PlcPoller:
    """Polls a PLC that acts as Modbus server.

    ``exchange(inputs, now_s) -> outputs`` is called once per successful read with the PLC's
    input words and returns the station's 18 output words to write.
    """

    def __init__(self, config: PlcConfig, exchange: Callable[[list[int], float], list[int]]):
        self.config = config
        self._exchange = exchange
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: ModbusTcpClient | None = None
        self._written: list[int] | None = None  # what the PLC holds now, as far as we know
        self.connected = False
        self.polls = 0
        self.connects = 0
        self.connect_attempts = 0
        self.failures = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="plc-client", daemon=True)
        self._thread.start()

    def stop(self, final_outputs: list[int] | None = None, timeout_s: float = 5.0) -> None:
        """Stop polling; if connected, write ``final_outputs`` (the cleared block) first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if final_outputs is not None and self._client is not None and self.connected:
            try:
                self._write(final_outputs)
            except (ModbusException, OSError) as exc:
                log.warning("PLC client: could not clear outputs at shutdown: %s", exc)
        self._disconnect()

    # ---- loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        period = self.config.poll_period_ms / 1000.0
        backoff = [ms / 1000.0 for ms in self.config.reconnect_backoff_ms] or [1.0]
        attempt = 0
        next_poll = time.monotonic()
        while not self._stop.is_set():
            if not self.connected:
                if self._connect():
                    attempt = 0
                    next_poll = time.monotonic()
                else:
                    delay = backoff[min(attempt, len(backoff) - 1)]
                    attempt += 1
                    self._stop.wait(delay)
                    continue
            try:
                self._poll_once()
            except (ModbusException, OSError, ValueError) as exc:
                self.failures += 1
                log.warning("PLC client: lost %s:%d (%s); reconnecting", self.config.host, self.config.port, exc)
                self._disconnect()
                continue
            next_poll += period
            now = time.monotonic()
            if next_poll < now:  # fell behind (slow PLC): restart the grid instead of bursting
                next_poll = now + period
            self._stop.wait(next_poll - now)

    def _connect(self) -> bool:
        self._disconnect()
        self.connect_attempts += 1
        client = ModbusTcpClient(
            self.config.host, port=self.config.port, timeout=0.5, retries=0, reconnect_delay=0.0, name="plc"
        )
        if not client.connect():
            client.close()
            return False
        self._client = client
        self.connected = True
        self._written = None  # unknown after a (re)connect: write the whole block
        self.connects += 1
        log.info("PLC client: connected to %s:%d", self.config.host, self.config.port)
        return True

    def _disconnect(self) -> None:
        self.connected = False
        if self._client is not None:
            self._client.close()
            self._client = None

    def _poll_once(self) -> None:
        rr = self._client.read_holding_registers(self.config.input_base, count=INPUT_WORDS, device_id=self.config.unit_id)
        if rr.isError():
            raise ModbusException(f"read of input block at {self.config.input_base} answered {rr}")
        if len(rr.registers) != INPUT_WORDS:
            raise ModbusException(f"read of input block returned {len(rr.registers)} words")
        self.polls += 1
        outputs = self._exchange(list(rr.registers), time.monotonic())
        self._write(outputs)

    def _write(self, outputs: list[int]) -> None:
        old = self._written
        if old is None:
            # fresh connection: the PLC may still hold our last status (RESULT_VALID, PASS) from
            # before a restart; clear it before any result word changes under it
            self._check(self._client.write_register(self.config.output_base, 0, device_id=self.config.unit_id))
            old = self._written = [0] + [-1] * (len(outputs) - 1)
        status_changed = old[Out.STATUS] != outputs[Out.STATUS]
        rest_changed = old[1:] != outputs[1:]
        dropping_valid = bool(old[Out.STATUS] & Status.RESULT_VALID) and not outputs[Out.STATUS] & Status.RESULT_VALID
        if dropping_valid:  # flag down first, then the words it covered
            steps = [("status", status_changed), ("rest", rest_changed)]
        else:  # words first, then the status that makes them valid
            steps = [("rest", rest_changed), ("status", status_changed)]
        for what, changed in steps:
            if not changed:
                continue
            if what == "status":
                self._check(self._client.write_register(self.config.output_base, outputs[Out.STATUS], device_id=self.config.unit_id))
            else:
                self._check(self._client.write_registers(self.config.output_base + 1, outputs[1:], device_id=self.config.unit_id))
        self._written = list(outputs)

    @staticmethod
    def _check(response) -> None:
        if response.isError():
            raise ModbusException(f"write answered {response}")
