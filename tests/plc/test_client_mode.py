"""Client mode: the PLC is the Modbus server (a plain pymodbus server holding the PLC's
memory); the station polls its input block and writes its output block."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from station.plc.registers import OUTPUT_WORDS, Control, ErrorCode, Out, Status, join_u32, split_u32
from tests.plc.conftest import free_port, wait_until

IN_BASE, OUT_BASE = 10, 200
OUTPUT_BASE_FOR_VOLUME = 40  # the volume test also checks a low, non-default output base


class LoggedBlock(ModbusSequentialDataBlock):
    """PLC memory that remembers every write the station makes (address, values)."""

    def __init__(self):
        super().__init__(0, [0] * 300)
        self.writes: list[tuple[int, list[int]]] = []

    def setValues(self, address, values):  # noqa: N802 (pymodbus API)
        self.writes.append((address - 1, list(values)))  # the device context adds 1
        super().setValues(address, values)


class PlcMemory:
    """A PLC's holding registers served over Modbus TCP in a background thread."""

    def __init__(self, port: int):
        self.port = port
        self.block = LoggedBlock()
        self.device = ModbusDeviceContext(hr=self.block)
        self._loop = None
        self._server = None
        self._thread = None

    def start(self) -> "PlcMemory":
        ready = threading.Event()

        async def serve():
            self._server = ModbusTcpServer(ModbusServerContext(devices={1: self.device}, single=False), address=("127.0.0.1", self.port))
            await self._server.serve_forever(background=True)
            ready.set()
            await self._server.serving

        def run():
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(5)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._thread.join(5)
        self._thread = None

    # the PLC program's view of its own memory
    def get(self, address: int, count: int = 1) -> list[int]:
        return list(self.device.getValues(3, address, count))

    def put(self, address: int, values: list[int]) -> None:
        self.device.setValues(3, address, values)
        self.block.writes.pop()  # the PLC's own writes are not the station's

    def outputs(self) -> list[int]:
        return self.get(OUT_BASE, OUTPUT_WORDS)

    def control(self, value: int) -> None:
        self.put(IN_BASE, [value])

    def wait(self, predicate, timeout_s: float = 5.0, beat: bool = True) -> list[int]:
        end = time.monotonic() + timeout_s
        last_beat = time.monotonic()
        while True:
            out = self.outputs()
            if predicate(out):
                return out
            assert time.monotonic() < end, f"status {Status(out[0])!r} {out}"
            if beat and time.monotonic() - last_beat > 0.1:
                self.control(self.get(IN_BASE)[0] ^ Control.HEARTBEAT)
                last_beat = time.monotonic()
            time.sleep(0.002)


@pytest.fixture
def plc_memory():
    mems = []

    def start(port=None):
        m = PlcMemory(port or free_port()).start()
        mems.append(m)
        return m

    yield start
    for m in mems:
        m.stop()


def client_rig(make_rig, port, **kw):
    return make_rig(
        port=port, mode="client", host="127.0.0.1", input_base=IN_BASE, output_base=OUT_BASE, poll_period_ms=5, **kw
    )


def run_part(plc: PlcMemory, part_id: int) -> list[int]:
    hi, lo = split_u32(part_id)
    plc.put(IN_BASE + 2, [hi, lo])
    ctrl = plc.get(IN_BASE)[0]
    plc.control(ctrl | Control.TRIGGER)
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.TRIGGER_ACK))
    plc.control(plc.get(IN_BASE)[0] & ~Control.TRIGGER)
    out = plc.wait(lambda o: bool(o[Out.STATUS] & Status.RESULT_VALID))
    plc.control(plc.get(IN_BASE)[0] | Control.RESULT_ACK)
    plc.wait(lambda o: not o[Out.STATUS] & Status.RESULT_VALID)
    plc.control(plc.get(IN_BASE)[0] & ~Control.RESULT_ACK)
    return out


def test_client_mode_full_handshake_result_words_before_valid(plc_memory, make_rig):
    plc = plc_memory()
    rig = client_rig(make_rig, plc.port)
    rig.inspector.defective = {8}
    idle = plc.wait(lambda o: bool(o[Out.STATUS] & Status.READY))
    assert idle[Out.ACTIVE_RECIPE] == 7
    good = run_part(plc, 7)
    assert Status(good[Out.STATUS]) & Status.PASS and join_u32(good[Out.PART_ID_HI], good[Out.PART_ID_LO]) == 7
    bad = run_part(plc, 8)
    assert Status(bad[Out.STATUS]) & Status.REJECT and bad[Out.RESULT_CODE] == 3 and bad[Out.SEQUENCE] == 2

    # wire order: every write that raised RESULT_VALID came after the result words it covers
    writes = plc.block.writes
    raised = [i for i, (addr, vals) in enumerate(writes) if addr == OUT_BASE and vals[0] & Status.RESULT_VALID]
    assert raised
    for i in raised:
        prev_valid = [w for w in writes[:i] if w[0] == OUT_BASE]
        if prev_valid and prev_valid[-1][1][0] & Status.RESULT_VALID:
            continue  # not a rising edge
        addr, vals = writes[i - 1]
        assert addr == OUT_BASE + 1 and len(vals) == OUTPUT_WORDS - 1, writes[i - 1]
        assert join_u32(vals[Out.PART_ID_HI - 1], vals[Out.PART_ID_LO - 1]) in (7, 8)
    # nothing was written outside the output block
    assert all(OUT_BASE <= addr and addr + len(vals) <= OUT_BASE + OUTPUT_WORDS for addr, vals in writes)


def test_client_reconnects_after_plc_restart(plc_memory, make_rig):
    plc = plc_memory()
    rig = client_rig(make_rig, plc.port, heartbeat_timeout_ms=300, reconnect_backoff_ms=[50, 100, 200])
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.READY))
    run_part(plc, 1)
    plc.stop()
    wait_until(lambda: rig.alarms.is_active("plc_offline"))
    assert rig.service.handshake.outputs()[Out.ERROR_CODE] == ErrorCode.PLC_OFFLINE
    before = rig.service.poller.connect_attempts
    time.sleep(1.0)
    attempts = rig.service.poller.connect_attempts - before
    assert 1 <= attempts <= 8, f"{attempts} connection attempts in 1 s (backoff 50/100/200 ms)"

    again = plc_memory(plc.port)  # PLC back, with fresh (zeroed) memory
    out = again.wait(lambda o: bool(o[Out.STATUS] & Status.READY), timeout_s=5)
    assert out[Out.ACTIVE_RECIPE] == 7 and out[Out.INSPECTED_LO] == 1  # whole block rewritten
    assert not rig.alarms.is_active("plc_offline")
    res = run_part(again, 2)
    assert join_u32(res[Out.PART_ID_HI], res[Out.PART_ID_LO]) == 2 and res[Out.SEQUENCE] == 2


def test_client_clears_outputs_on_stop(plc_memory, make_rig):
    plc = plc_memory()
    rig = client_rig(make_rig, plc.port)
    hi, lo = split_u32(5)
    plc.put(IN_BASE + 2, [hi, lo])
    plc.control(Control.TRIGGER)
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.RESULT_VALID))
    rig.service.stop()
    out = plc.outputs()
    assert out[Out.STATUS] == 0 and out[Out.RESULT_CODE] == 0xFFFF


def test_client_mode_300_parts_in_order(plc_memory, make_rig):
    """The PLC program runs in the PLC's memory; the station polls it every 1 ms."""
    plc = plc_memory()
    rig = make_rig(port=plc.port, mode="client", host="127.0.0.1", input_base=IN_BASE, output_base=OUTPUT_BASE_FOR_VOLUME, poll_period_ms=1)
    rig.inspector.defective = set(range(5, 301, 5))
    base = OUTPUT_BASE_FOR_VOLUME
    control, part, results = 0, 1, []
    end = time.monotonic() + 60
    while len(results) < 300:
        assert time.monotonic() < end, f"stalled after {len(results)} results"
        out = plc.get(base, OUTPUT_WORDS)
        st = Status(out[Out.STATUS])
        new = control ^ Control.HEARTBEAT if len(results) % 10 == 0 else control
        if not control & Control.TRIGGER and part <= 300 and st & Status.READY and not st & Status.TRIGGER_ACK:
            hi, lo = split_u32(part)
            plc.put(IN_BASE + 2, [hi, lo])
            new |= Control.TRIGGER
        elif control & Control.TRIGGER and st & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED):
            assert st & Status.TRIGGER_ACK
            part += 1
            new &= ~Control.TRIGGER
        if st & Status.RESULT_VALID and not control & Control.RESULT_ACK:
            results.append((join_u32(out[Out.PART_ID_HI], out[Out.PART_ID_LO]), out[Out.RESULT_CODE], bool(st & Status.PASS)))
            new |= Control.RESULT_ACK
        elif control & Control.RESULT_ACK and not st & Status.RESULT_VALID:
            new &= ~Control.RESULT_ACK
        if new != control:
            plc.control(new)
            control = new
        time.sleep(0.0005)
    assert [r[0] for r in results] == list(range(1, 301))
    assert all(code == (3 if pid % 5 == 0 else 0) and passed == (pid % 5 != 0) for pid, code, passed in results)
    wait_until(lambda: rig.service.handshake.acknowledged == 300)  # the last ACK is read at the next poll



def test_stale_pass_in_plc_memory_is_cleared_before_anything_else(plc_memory, make_rig):
    plc = plc_memory()
    # the PLC still shows the last result of a previous run: VALID + PASS, result code 0
    plc.put(OUT_BASE, [int(Status.READY | Status.RESULT_VALID | Status.PASS)] + [0] * (OUTPUT_WORDS - 1))
    client_rig(make_rig, plc.port)
    wait_until(lambda: len(plc.block.writes) >= 2)
    first_addr, first_vals = plc.block.writes[0]
    assert (first_addr, first_vals) == (OUT_BASE, [0])  # status cleared before any result word
    assert not Status(plc.outputs()[Out.STATUS]) & (Status.RESULT_VALID | Status.PASS)
