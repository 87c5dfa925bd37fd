"""Full handshake over loopback: the real PlcService serving, a pymodbus client as the PLC."""

from __future__ import annotations

import time

from station.plc.registers import NO_RESULT, Control, ErrorCode, Out, Status
from tests.plc.conftest import part_id_of


def status(out) -> Status:
    return Status(out[Out.STATUS])


def test_ready_pass_and_reject_with_every_result_word(make_rig):
    rig = make_rig()
    rig.inspector.defective = {70001}
    plc = rig.master()
    idle = plc.wait(lambda o: bool(o[Out.STATUS] & Status.READY))
    assert status(idle) & Status.ONLINE
    assert not status(idle) & (Status.RESULT_VALID | Status.PASS | Status.REJECT | Status.BUSY)
    assert idle[Out.ACTIVE_RECIPE] == 7 and idle[Out.RESULT_CODE] == NO_RESULT

    ack = plc.trigger(70000)
    assert status(ack) & Status.TRIGGER_ACK and not status(ack) & Status.TRIGGER_FAILED
    assert ack[Out.ACQUISITION_ID] == 1
    good = plc.take_result()
    assert status(good) & Status.RESULT_VALID and status(good) & Status.PASS and not status(good) & Status.REJECT
    assert good[Out.RESULT_CODE] == 0 and part_id_of(good) == 70000 and good[Out.SEQUENCE] == 1
    assert good[Out.DEFECT_COUNT] == 0 and good[Out.ERROR_CODE] == 0

    plc.trigger(70001)
    bad = plc.take_result()
    assert status(bad) & Status.REJECT and not status(bad) & Status.PASS
    assert bad[Out.RESULT_CODE] == 3 and bad[Out.TOP_CLASS] == 3 and bad[Out.TOP_CONFIDENCE] == 875
    assert part_id_of(bad) == 70001 and bad[Out.SEQUENCE] == 2 and bad[Out.DEFECT_COUNT] == 1
    # counters: 2 inspected, 1 rejected (uint32, high word first)
    assert bad[Out.INSPECTED_HI:Out.INSPECTED_LO + 1] == [0, 2]
    assert bad[Out.REJECTED_HI:Out.REJECTED_LO + 1] == [0, 1]

    after = plc.wait(lambda o: not o[Out.STATUS] & Status.RESULT_VALID)
    assert after[Out.RESULT_CODE] == NO_RESULT and not status(after) & (Status.PASS | Status.REJECT)
    assert rig.service.handshake.acknowledged == 2


def test_part_id_uses_all_32_bits(make_rig):
    rig = make_rig()
    plc = rig.master()
    plc.trigger(0xDEADBEEF)
    out = plc.take_result()
    assert part_id_of(out) == 0xDEADBEEF
    assert rig.pipeline.stats.parts == 1


def test_station_heartbeat_toggles_and_counts(make_rig):
    rig = make_rig()
    plc = rig.master()
    seen_bits, counts = set(), []
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        out = plc.outputs()
        seen_bits.add(bool(out[Out.STATUS] & Status.HEARTBEAT))
        counts.append(out[Out.HEARTBEAT_COUNT])
        plc.beat()
        time.sleep(0.05)
    assert seen_bits == {True, False}
    assert counts[-1] - counts[0] >= 3  # 250 ms period: at least 3 steps in 1.2 s


def test_writes_outside_the_input_block_are_refused_and_change_nothing(make_rig):
    rig = make_rig()
    plc = rig.master()
    before = plc.outputs()
    for address in (4, 99, 100, 103, 117, 500):
        rr = plc.client.write_register(address, 0x1234, device_id=1)
        assert rr.isError() and rr.exception_code == 2, (address, rr)
    rr = plc.client.write_registers(2, [1, 2, 3], device_id=1)  # 2..4 crosses the block end
    assert rr.isError() and rr.exception_code == 2
    rr = plc.client.read_holding_registers(110, count=11, device_id=1)  # past 119
    assert rr.isError() and rr.exception_code == 2
    after = plc.outputs()
    for off in (Out.ERROR_CODE, Out.RESULT_CODE, Out.ACTIVE_RECIPE, Out.INSPECTED_LO):
        assert after[off] == before[off]
    assert rig.service.server.registers.snapshot()[4:100] == [0] * 96


def test_load_recipe_known_and_unknown(make_rig):
    rig = make_rig(recipes=[("widget", 7, 2000), ("gadget", 9, 2000)])
    plc = rig.master()
    plc.client.write_register(1, 9, device_id=1)
    plc.set(Control.LOAD_RECIPE)
    done = plc.wait(lambda o: bool(o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED)))
    assert status(done) & Status.CMD_DONE and done[Out.ACTIVE_RECIPE] == 9
    assert rig.pipeline.recipe.loaded.recipe.name == "gadget"
    plc.drop(Control.LOAD_RECIPE)
    plc.wait(lambda o: not o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED))

    plc.client.write_register(1, 4242, device_id=1)
    plc.set(Control.LOAD_RECIPE)
    failed = plc.wait(lambda o: bool(o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED)))
    assert status(failed) & Status.CMD_FAILED and status(failed) & Status.ERROR
    assert failed[Out.ERROR_CODE] == ErrorCode.RECIPE_UNKNOWN and failed[Out.ACTIVE_RECIPE] == 9
    assert rig.alarms.is_active("plc_command_failed")
    plc.drop(Control.LOAD_RECIPE)
    # parts still run with the recipe that stayed
    plc.trigger(1)
    assert plc.take_result()[Out.RESULT_CODE] == 0
    assert rig.pipeline.stats.parts == 1
    # CLEAR_ERROR: cause gone → error and alarm cleared
    plc.set(Control.CLEAR_ERROR)
    cleared = plc.wait(lambda o: bool(o[Out.STATUS] & Status.CMD_DONE))
    assert cleared[Out.ERROR_CODE] == 0 and not status(cleared) & Status.ERROR
    assert not rig.alarms.is_active("plc_command_failed")
    plc.drop(Control.CLEAR_ERROR)


def test_recipe_that_fails_to_build_keeps_the_running_one(make_rig):
    from tests.plc.parts import TinyInspector

    good = TinyInspector()

    def build(loaded):
        if loaded.recipe.name == "broken":
            raise RuntimeError("model file missing")
        return good

    rig = make_rig(recipes=[("widget", 7, 2000), ("broken", 8, 2000)], build_inspector=build)
    plc = rig.master()
    plc.client.write_register(1, 8, device_id=1)
    plc.set(Control.LOAD_RECIPE)
    out = plc.wait(lambda o: bool(o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED)))
    assert status(out) & Status.CMD_FAILED and out[Out.ERROR_CODE] == ErrorCode.RECIPE_LOAD_FAILED
    assert out[Out.ACTIVE_RECIPE] == 7 and status(out) & Status.READY


def test_set_offline_refuses_triggers_until_released(make_rig):
    rig = make_rig()
    plc = rig.master()
    plc.set(Control.SET_OFFLINE)
    off = plc.wait(lambda o: not o[Out.STATUS] & Status.ONLINE)
    assert not status(off) & Status.READY and rig.pipeline.offline
    answer = plc.trigger(5)
    assert status(answer) & Status.TRIGGER_FAILED and answer[Out.ERROR_CODE] == ErrorCode.STATION_OFFLINE
    # CLEAR_ERROR while still offline: the cause is present → CMD_FAILED, error stays
    plc.set(Control.CLEAR_ERROR)
    refused = plc.wait(lambda o: bool(o[Out.STATUS] & (Status.CMD_DONE | Status.CMD_FAILED)))
    assert status(refused) & Status.CMD_FAILED and refused[Out.ERROR_CODE] == ErrorCode.STATION_OFFLINE
    plc.drop(Control.CLEAR_ERROR)
    plc.drop(Control.SET_OFFLINE)
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.READY))
    assert not rig.pipeline.offline
    assert status(plc.trigger(6)) & Status.TRIGGER_ACK
    assert part_id_of(plc.take_result()) == 6
    assert rig.pipeline.stats.parts == 1  # the refused part was never inspected


def test_reset_counters(make_rig):
    rig = make_rig()
    rig.inspector.defective = {2}
    plc = rig.master()
    for pid in (1, 2):
        plc.trigger(pid)
        plc.take_result()
    assert plc.outputs()[Out.INSPECTED_LO] == 2
    assert rig.stats.shift.snapshot().parts == 2
    plc.set(Control.RESET_COUNTERS)
    out = plc.wait(lambda o: bool(o[Out.STATUS] & Status.CMD_DONE))
    assert out[Out.INSPECTED_HI:Out.REJECTED_LO + 1] == [0, 0, 0, 0]
    assert rig.stats.shift.snapshot().parts == 0  # the operator's counters too (docs/plc.md)
    plc.drop(Control.RESET_COUNTERS)
    plc.wait(lambda o: not o[Out.STATUS] & Status.CMD_DONE)


def test_outputs_cleared_at_shutdown(make_rig):
    rig = make_rig()
    plc = rig.master()
    plc.trigger(11)
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.RESULT_VALID))
    rig.service.stop()
    block = rig.service.server.registers.snapshot()[100:118]
    assert block[Out.STATUS] == 0 and block[Out.RESULT_CODE] == NO_RESULT
    rig.service.stop()  # twice is fine


def test_one_request_per_cycle_with_read_write_multiple(make_rig):
    """FC 23 writes the control block and reads the status in one request: the answer to the
    TRIGGER write already carries TRIGGER_ACK (the write is handled before the read)."""
    rig = make_rig()
    plc = rig.master()

    def cycle(control, part_id=0):
        hi, lo = part_id >> 16, part_id & 0xFFFF
        rr = plc.client.readwrite_registers(read_address=100, read_count=18, write_address=0, values=[control, 0, hi, lo], device_id=1)
        assert not rr.isError(), rr
        return rr.registers

    out = cycle(int(Control.TRIGGER | Control.HEARTBEAT), 31)
    assert status(out) & Status.TRIGGER_ACK
    out = cycle(0, 31)
    while not status(out) & Status.RESULT_VALID:
        out = cycle(0, 31)
    assert part_id_of(out) == 31 and status(out) & Status.PASS
    out = cycle(int(Control.RESULT_ACK), 31)
    assert not status(out) & Status.RESULT_VALID  # acknowledged in the same request
    cycle(0)
    rr = plc.client.readwrite_registers(read_address=100, read_count=1, write_address=100, values=[1], device_id=1)
    assert rr.isError() and rr.exception_code == 2


def test_mask_write_sets_one_control_bit(make_rig):
    rig = make_rig()
    plc = rig.master()
    plc.client.write_registers(2, [0, 77], device_id=1)
    rr = plc.client.mask_write_register(address=0, and_mask=0xFFFF ^ Control.TRIGGER, or_mask=Control.TRIGGER, device_id=1)
    assert not rr.isError(), rr
    plc.control = int(Control.TRIGGER)
    ack = plc.wait(lambda o: bool(o[Out.STATUS] & Status.TRIGGER_ACK))
    assert ack[Out.ACQUISITION_ID] == 1
    plc.drop(Control.TRIGGER)
    assert part_id_of(plc.take_result()) == 77


def test_snapshot_for_hmi(make_rig):
    import json

    rig = make_rig()
    plc = rig.master()
    plc.trigger(5)
    plc.wait(lambda o: bool(o[Out.STATUS] & Status.RESULT_VALID))
    snap = rig.service.snapshot()
    json.dumps(snap)
    assert snap["mode"] == "server" and snap["plc_online"] and snap["results_waiting"] == 1
    assert "RESULT_VALID" in snap["status_bits"] and snap["accepted_triggers"] == 1 and snap["requests"] > 0
