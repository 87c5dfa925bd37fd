"""Fault tests over loopback: disconnects, a PLC that never acknowledges, budget overruns,
clients outside the allow-list."""

from __future__ import annotations

import time

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from station.plc.registers import NO_RESULT, Control, ErrorCode, Out, Status
from tests.plc.conftest import part_id_of, wait_until
from tests.plc.parts import TinyInspector


def status(out) -> Status:
    return Status(out[Out.STATUS])


def test_plc_disconnects_mid_handshake_and_returns(make_rig):
    rig = make_rig(heartbeat_timeout_ms=300)
    plc = rig.master()
    plc.trigger(501)
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.RESULT_VALID))
    plc.close()  # gone before acknowledging
    wait_until(lambda: rig.alarms.is_active("plc_offline"))
    # watchdog: alarm, READY / RESULT_VALID / PASS low; the result is kept, not lost
    assert rig.alarms.is_active("plc_offline")
    block = rig.service.outputs()
    assert not Status(block[Out.STATUS]) & (Status.READY | Status.RESULT_VALID | Status.PASS)
    assert block[Out.ERROR_CODE] == ErrorCode.PLC_OFFLINE and block[Out.RESULT_CODE] == NO_RESULT

    back = rig.master()
    back.beat()  # a fresh PLC connection: control word from 0, heartbeat toggles
    out = back.wait(lambda o: bool(o[Out.STATUS] & Status.RESULT_VALID))
    assert part_id_of(out) == 501 and status(out) & Status.PASS and status(out) & Status.READY
    assert out[Out.ERROR_CODE] == 0 and not rig.alarms.is_active("plc_offline")
    assert back.take_result()[Out.SEQUENCE] == 1
    back.trigger(502)
    assert part_id_of(back.take_result()) == 502
    assert rig.pipeline.stats.parts == 2


def test_plc_that_stops_toggling_its_heartbeat_is_offline(make_rig):
    rig = make_rig(heartbeat_timeout_ms=300)
    plc = rig.master()
    started = time.monotonic()
    wait_until(lambda: bool(plc.outputs()) and rig.alarms.is_active("plc_offline"))  # polls, never toggles b15
    assert time.monotonic() - started >= 0.25  # not before the 300 ms timeout
    plc.client.write_registers(2, [0, 9], device_id=1)
    plc.set(Control.TRIGGER)  # no heartbeat toggle with it: still offline
    out = plc.wait(lambda o: bool(o[Out.STATUS] & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED)), beat=False)
    assert status(out) & Status.TRIGGER_FAILED and out[Out.ERROR_CODE] == ErrorCode.PLC_OFFLINE
    plc.drop(Control.TRIGGER)
    plc.beat()
    out = plc.wait(lambda o: bool(o[Out.STATUS] & Status.READY))
    assert not rig.alarms.is_active("plc_offline") and out[Out.ERROR_CODE] == 0
    assert rig.pipeline.stats.parts == 0


def test_plc_never_acknowledges_buffer_fills_then_overrun(make_rig):
    rig = make_rig(result_buffer=3)
    plc = rig.master()
    for pid in (1, 2, 3):
        assert status(plc.trigger(pid)) & Status.TRIGGER_ACK
    full = plc.wait(lambda o: o[Out.RESULTS_WAITING] == 2 and bool(o[Out.STATUS] & Status.RESULT_VALID))
    assert not status(full) & Status.READY
    refused = plc.trigger(4)
    assert status(refused) & Status.TRIGGER_FAILED and status(refused) & Status.OVERRUN
    assert refused[Out.ERROR_CODE] == ErrorCode.OVERRUN and rig.alarms.is_active("plc_overrun")
    # CLEAR_ERROR while full: the cause is still there
    plc.set(Control.CLEAR_ERROR)
    assert status(plc.wait(lambda o: bool(o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED)))) & Status.CMD_FAILED
    plc.drop(Control.CLEAR_ERROR)
    # nothing lost: the three accepted parts come out in order, the refused one never ran
    got = [part_id_of(plc.take_result()) for _ in range(3)]
    assert got == [1, 2, 3]
    assert rig.pipeline.stats.parts == 3
    plc.set(Control.CLEAR_ERROR)
    ok = plc.wait(lambda o: bool(o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED)))
    assert status(ok) & Status.CMD_DONE and not status(ok) & Status.OVERRUN and ok[Out.ERROR_CODE] == 0
    assert not rig.alarms.is_active("plc_overrun")
    plc.drop(Control.CLEAR_ERROR)
    assert status(plc.trigger(5)) & Status.TRIGGER_ACK


def test_inspection_over_budget_is_a_failsafe_reject(make_rig):
    rig = make_rig(inspector=TinyInspector(stall_s={77: 1.0}), budget_ms=300)
    plc = rig.master()
    plc.trigger(77)
    out = plc.take_result()
    assert status(out) & Status.REJECT and not status(out) & Status.PASS
    assert out[Out.RESULT_CODE] == NO_RESULT and out[Out.ERROR_CODE] == ErrorCode.TIMEOUT
    assert part_id_of(out) == 77 and out[Out.PROCESSING_MS] >= 300
    # the next part is inspected normally once the stalled worker is free again
    wait_until(lambda: rig.stats.late_results == 1)
    plc.trigger(78)
    nxt = plc.take_result(timeout_s=3)
    assert status(nxt) & Status.PASS and nxt[Out.RESULT_CODE] == 0 and part_id_of(nxt) == 78


def test_client_outside_allow_list_is_refused(make_rig):
    # the station only accepts 127.0.0.2; our client connects from 127.0.0.1
    rig = make_rig(host="127.0.0.1", allow=["127.0.0.2"])
    refused = ModbusTcpClient("127.0.0.1", port=rig.port, timeout=1, retries=0, source_address=("127.0.0.1", 0))
    try:
        refused.connect()
        with pytest.raises((ModbusException, ConnectionError)):  # refused at connect, or reset at the first request
            rr = refused.read_holding_registers(100, count=1, device_id=1)
            assert rr.isError()
    finally:
        refused.close()
    assert rig.service.server.refused_connections >= 1
    assert rig.service.server.registers.snapshot()[0] == 0


def test_allowed_client_is_served(make_rig):
    rig = make_rig(host="127.0.0.1", allow=["127.0.0.1"])
    plc = rig.master()
    plc.trigger(3)
    assert part_id_of(plc.take_result()) == 3
    assert rig.service.server.refused_connections == 0


def test_address_outside_allow_list_but_other_client_keeps_working(make_rig):
    """Server bound to all loopback addresses, allow-list 127.0.0.2: a client from 127.0.0.2
    is served while one from 127.0.0.1 is dropped."""
    rig = make_rig(host="127.0.0.1", allow=["127.0.0.2/32"])
    good = ModbusTcpClient("127.0.0.1", port=rig.port, timeout=1, retries=0, source_address=("127.0.0.2", 0))
    bad = ModbusTcpClient("127.0.0.1", port=rig.port, timeout=1, retries=0, source_address=("127.0.0.1", 0))
    try:
        assert good.connect()
        bad.connect()
        with pytest.raises((ModbusException, ConnectionError)):  # refused at connect, or reset at the first request
            rr = bad.read_holding_registers(100, count=1, device_id=1)
            assert rr.isError()
        rr = good.read_holding_registers(100, count=18, device_id=1)
        assert not rr.isError() and rr.registers[Out.ACTIVE_RECIPE] == 7
    finally:
        good.close()
        bad.close()
    assert rig.service.server.refused_connections >= 1


def test_port_in_use_is_a_clear_start_error(tmp_path):
    import socket

    from station.alarms import AlarmBoard
    from station.config import PlcConfig
    from station.pipeline import Pipeline
    from station.plc.service import PlcService
    from station.stats import StationStats
    from tests.plc.conftest import write_recipes
    from tests.plc.parts import TinyCamera

    book = write_recipes(tmp_path / "recipes", [("widget", 7, 1000)])
    pipeline = Pipeline({"top": TinyCamera()}, lambda loaded: TinyInspector(), AlarmBoard())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        service = PlcService(PlcConfig(port=port), pipeline, book, AlarmBoard(), StationStats())
        with pytest.raises(RuntimeError, match=rf"127\.0\.0\.1:{port}: Address already in use"):
            service.start()
        service.stop()  # safe after a failed start


@pytest.mark.parametrize(
    "part,code",
    [(61, ErrorCode.CAMERA_ERROR), (62, ErrorCode.DECISION_ERROR)],
    ids=["camera fails", "rules raise"],
)
def test_stage_failure_is_failsafe_reject_with_its_error_code(make_rig, part, code):
    from tests.plc.parts import TinyCamera

    rig = make_rig(camera=TinyCamera(fail_parts={61}), inspector=TinyInspector(undecidable={62}))
    plc = rig.master()
    plc.trigger(part)
    out = plc.take_result()
    assert status(out) & Status.REJECT and not status(out) & Status.PASS
    assert out[Out.RESULT_CODE] == NO_RESULT and out[Out.ERROR_CODE] == code and out[Out.DEFECT_COUNT] == 0
    plc.set(Control.CLEAR_ERROR)  # cause gone with the part: cleared
    cleared = plc.wait(lambda o: bool(o[Out.STATUS] & Status.CMD_DONE))
    assert cleared[Out.ERROR_CODE] == 0
    plc.drop(Control.CLEAR_ERROR)
    plc.trigger(part + 100)
    assert status(plc.take_result()) & Status.PASS


def test_ready_drops_while_the_pipeline_is_full(make_rig):
    """A PLC that waits for READY is never refused because inspection is slower than the line."""
    rig = make_rig(inspector=TinyInspector(stall_s={1: 1.0}), queue_depth=1, result_buffer=16, budget_ms=5000)
    plc = rig.master()
    accepted = 0
    for part in range(1, 12):
        out = plc.wait(lambda o: True)
        if not status(out) & Status.READY:
            break
        assert status(plc.trigger(part)) & Status.TRIGGER_ACK, f"part {part} refused although READY was high"
        accepted += 1
    else:
        raise AssertionError("READY never dropped with the pipeline full")
    # how many fit before READY drops depends on how fast part 1 leaves the 1-deep queue: at least one
    assert 1 <= accepted < 11
    assert plc.outputs()[Out.ERROR_CODE] == 0
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.READY), timeout_s=5)
    got = [part_id_of(plc.take_result()) for _ in range(accepted)]
    assert got == list(range(1, accepted + 1))
