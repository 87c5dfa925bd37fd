"""The handshake state machine alone: plain register values, simulated time, no network."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from station.plc.handshake import HEARTBEAT_PERIOD_S, ModbusHandshake, PlcResult, TriggerRejected
from station.plc.registers import NO_RESULT, Control, ErrorCode, Out, Status, join_u32, split_u32


class StationModel:
    """The station side of the handshake as plain state (what PlcService does over the pipeline)."""

    def __init__(self):
        self.seq = 0
        self.offline = False
        self.recipe_id = 7
        self.alarms: set[str] = set()
        self.loads: list[int] = []
        self.parts = self.rejected = 0

    def trigger(self, part_id):
        if self.offline:
            raise TriggerRejected(ErrorCode.STATION_OFFLINE, "offline")
        self.seq += 1
        return self.seq

    def refusal(self):
        if self.offline:
            return ErrorCode.STATION_OFFLINE
        return ErrorCode.NONE if self.recipe_id else ErrorCode.NO_RECIPE

    def is_offline(self):
        return self.offline

    def set_offline(self, offline):
        self.offline = offline

    def start_load_recipe(self, plc_id):
        if plc_id == 404:
            raise TriggerRejected(ErrorCode.RECIPE_UNKNOWN, "no such recipe")
        self.loads.append(plc_id)

    def reset_counters(self):
        self.parts = self.rejected = 0

    def counters(self):
        return self.parts, self.rejected

    def unrecorded(self):
        return 0

    def active_recipe_id(self):
        return self.recipe_id

    def raise_alarm(self, key, message):
        self.alarms.add(key)

    def clear_alarm(self, key):
        self.alarms.discard(key)


def make(buffer=4, timeout_s=1.0):
    model = StationModel()
    hs = ModbusHandshake(model, buffer, timeout_s)
    return hs, model


def words(control, part_id=0, recipe=0):
    hi, lo = split_u32(part_id)
    return [control, recipe, hi, lo]


def st_of(hs) -> Status:
    return Status(hs.outputs()[Out.STATUS])


def passed(seq, part):
    return PlcResult(sequence=seq, part_id=part, passed=True, result_code=0)


def test_outputs_cleared_before_start_and_after_stop():
    hs, _ = make()
    cleared = hs.outputs()
    assert cleared[Out.STATUS] == 0 and cleared[Out.RESULT_CODE] == NO_RESULT and sum(cleared) == NO_RESULT
    hs.start(0.0)
    hs.inputs_written(words(Control.TRIGGER, 5), 0.01)
    hs.result_ready(passed(1, 5))
    assert st_of(hs) & Status.PASS
    hs.stop()
    assert hs.outputs() == cleared


def test_heartbeat_toggles_every_period_and_counts():
    hs, _ = make(timeout_s=100)
    hs.start(0.0)
    bits, counts = [], []
    t = 0.0
    while t < 2.0:
        hs.tick(t)
        out = hs.outputs()
        bits.append(bool(out[Out.STATUS] & Status.HEARTBEAT))
        counts.append(out[Out.HEARTBEAT_COUNT])
        t += 0.01
    changes = sum(1 for a, b in zip(bits, bits[1:]) if a != b)
    assert changes == round(2.0 / HEARTBEAT_PERIOD_S) - 1 or changes == round(2.0 / HEARTBEAT_PERIOD_S)
    assert counts[-1] == changes
    assert HEARTBEAT_PERIOD_S <= 0.5


def test_watchdog_trips_without_heartbeat_and_recovers():
    hs, model = make(timeout_s=1.0)
    hs.start(0.0)
    hs.inputs_written(words(Control.TRIGGER, 1), 0.1)
    hs.result_ready(passed(1, 1))
    assert st_of(hs) & Status.RESULT_VALID and st_of(hs) & Status.READY
    for t in (0.5, 0.9, 1.05):
        hs.request_seen(t)  # polling alone is not enough: the heartbeat bit must toggle
        hs.tick(t)
    assert "plc_offline" in model.alarms
    s = st_of(hs)
    assert not s & (Status.READY | Status.RESULT_VALID | Status.PASS)
    assert hs.outputs()[Out.ERROR_CODE] == ErrorCode.PLC_OFFLINE
    hs.inputs_written(words(Control.HEARTBEAT), 1.2)
    assert "plc_offline" not in model.alarms
    assert st_of(hs) & Status.RESULT_VALID and st_of(hs) & Status.PASS  # same result again
    assert hs.outputs()[Out.ERROR_CODE] == 0


def test_held_trigger_is_one_part_and_held_ack_is_one_result():
    hs, model = make()
    hs.start(0.0)
    hs.inputs_written(words(Control.TRIGGER, 10), 0.01)
    hs.inputs_written(words(Control.TRIGGER, 11), 0.02)  # still high: no new part
    assert model.seq == 1
    hs.inputs_written(words(0), 0.03)
    hs.inputs_written(words(Control.TRIGGER, 11), 0.04)
    assert model.seq == 2
    hs.result_ready(passed(1, 10))
    hs.result_ready(passed(2, 11))
    assert hs.outputs()[Out.RESULTS_WAITING] == 1
    hs.inputs_written(words(Control.TRIGGER | Control.RESULT_ACK), 0.05)
    assert not st_of(hs) & Status.RESULT_VALID
    hs.inputs_written(words(Control.RESULT_ACK), 0.06)  # ACK still held: the next result waits
    assert not st_of(hs) & Status.RESULT_VALID and hs.acknowledged == 1
    hs.inputs_written(words(0), 0.07)
    out = hs.outputs()
    assert Status(out[Out.STATUS]) & Status.RESULT_VALID and join_u32(out[Out.PART_ID_HI], out[Out.PART_ID_LO]) == 11


def test_stale_ack_from_before_a_restart_cannot_acknowledge_an_unseen_result():
    hs, _ = make()
    hs.start(0.0)
    hs.inputs_written(words(Control.RESULT_ACK | Control.TRIGGER, 8), 0.01)  # ACK left high in PLC memory
    hs.result_ready(passed(1, 8))
    assert not st_of(hs) & Status.RESULT_VALID and hs.acknowledged == 0  # waits for ACK low
    hs.inputs_written(words(Control.TRIGGER), 0.02)
    assert st_of(hs) & Status.RESULT_VALID
    hs.inputs_written(words(Control.TRIGGER | Control.RESULT_ACK), 0.03)
    assert hs.acknowledged == 1 and not st_of(hs) & Status.RESULT_VALID


def test_results_not_triggered_by_the_plc_are_ignored():
    hs, _ = make()
    hs.start(0.0)
    assert not hs.result_ready(passed(99, 1))
    assert not st_of(hs) & Status.RESULT_VALID


def test_reject_never_reads_as_pass_code():
    hs, _ = make()
    hs.start(0.0)
    hs.inputs_written(words(Control.TRIGGER, 3), 0.01)
    hs.result_ready(PlcResult(sequence=1, part_id=3, passed=False, result_code=0))
    out = hs.outputs()
    assert Status(out[Out.STATUS]) & Status.REJECT and out[Out.RESULT_CODE] == NO_RESULT


def test_failsafe_result_sets_error_code():
    hs, _ = make()
    hs.start(0.0)
    hs.inputs_written(words(Control.TRIGGER, 3), 0.01)
    hs.result_ready(PlcResult(sequence=1, part_id=3, passed=False, result_code=NO_RESULT, error_code=ErrorCode.TIMEOUT))
    out = hs.outputs()
    assert Status(out[Out.STATUS]) & (Status.REJECT | Status.ERROR) == Status.REJECT | Status.ERROR
    assert out[Out.ERROR_CODE] == ErrorCode.TIMEOUT


def test_overrun_when_buffer_full():
    hs, model = make(buffer=2)
    hs.start(0.0)
    for i, part in enumerate((1, 2, 3)):
        hs.inputs_written(words(Control.TRIGGER, part), 0.01 * (2 * i + 1))
        hs.inputs_written(words(0), 0.01 * (2 * i + 2))
        if part < 3:
            assert not st_of(hs) & Status.OVERRUN
    hs.inputs_written(words(Control.TRIGGER, 4), 0.1)
    s = st_of(hs)
    assert s & Status.TRIGGER_FAILED and s & Status.OVERRUN and not s & Status.READY
    assert model.seq == 2 and "plc_overrun" in model.alarms


def test_load_recipe_unknown_fails_at_once_and_loading_blocks_triggers():
    hs, model = make()
    hs.start(0.0)
    hs.inputs_written(words(Control.LOAD_RECIPE, recipe=404), 0.01)
    assert st_of(hs) & Status.CMD_FAILED and hs.outputs()[Out.ERROR_CODE] == ErrorCode.RECIPE_UNKNOWN
    hs.inputs_written(words(0), 0.02)
    assert not st_of(hs) & (Status.CMD_DONE | Status.CMD_FAILED)
    hs.inputs_written(words(Control.LOAD_RECIPE, recipe=9), 0.03)
    assert model.loads == [9] and not st_of(hs) & Status.READY
    hs.inputs_written(words(Control.LOAD_RECIPE | Control.TRIGGER, recipe=9), 0.04)
    assert st_of(hs) & Status.TRIGGER_FAILED and hs.outputs()[Out.ERROR_CODE] == ErrorCode.RECIPE_LOADING
    model.recipe_id = 9
    hs.load_finished(True)
    assert st_of(hs) & Status.CMD_DONE and st_of(hs) & Status.READY
    assert hs.outputs()[Out.ACTIVE_RECIPE] == 9


# ---- invariants under arbitrary PLC behaviour -----------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 0x3F), st.booleans()),  # control bits b0..b5, toggle heartbeat?
        st.tuples(st.just("decide"), st.sampled_from(["pass", "defect", "failsafe"]), st.booleans()),
        st.tuples(st.just("wait"), st.floats(0.001, 0.6), st.booleans()),
        st.tuples(st.just("load_done"), st.booleans(), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_invariants_hold_for_any_plc_behaviour(operations):
    hs, model = make(buffer=3, timeout_s=1.0)
    now = 0.0
    hs.start(now)
    control = 0
    acked_sequences = []
    part = 0
    for op in operations:
        if op[0] == "write":
            _, bits, beat = op
            control = (control & Control.HEARTBEAT) ^ (Control.HEARTBEAT if beat else 0) | bits
            part += 1
            before, acked = hs.presented, hs.acknowledged
            hs.inputs_written(words(control, part), now)
            if hs.acknowledged > acked:
                assert before is not None and before is not hs.presented
                acked_sequences.append(before.sequence)
        elif op[0] == "decide" and hs.in_flight:
            kind = op[1]
            seq = hs.in_flight[0]
            res = {
                "pass": PlcResult(seq, part, True, 0),
                "defect": PlcResult(seq, part, False, 3),
                "failsafe": PlcResult(seq, part, False, NO_RESULT, ErrorCode.TIMEOUT),
            }[kind]
            hs.result_ready(res)
        elif op[0] == "load_done" and hs.loading_recipe:
            hs.load_finished(op[1], ErrorCode.NONE if op[1] else ErrorCode.RECIPE_LOAD_FAILED)
        elif op[0] == "wait":
            now += op[1]
            hs.tick(now)
        out = hs.outputs()
        s = Status(out[Out.STATUS])
        if s & Status.PASS:
            assert s & Status.RESULT_VALID and out[Out.RESULT_CODE] == 0
        if s & Status.RESULT_VALID:
            assert bool(s & Status.PASS) != bool(s & Status.REJECT)
            assert hs.plc_online
        else:
            assert not s & (Status.PASS | Status.REJECT) and out[Out.RESULT_CODE] == NO_RESULT
        if s & Status.REJECT:
            assert out[Out.RESULT_CODE] != 0
        assert not (s & Status.TRIGGER_ACK and s & Status.TRIGGER_FAILED)
        if not hs.plc_online or model.offline or hs.loading_recipe:
            assert not s & Status.READY
        assert bool(s & Status.ONLINE) == (not model.offline)
        assert bool(s & Status.ERROR) == (out[Out.ERROR_CODE] != 0)
        assert not (s & Status.CMD_DONE and s & Status.CMD_FAILED)
        held = len(hs.in_flight) + len(hs.waiting) + (hs.presented is not None)
        assert held <= 3
        assert held + len(acked_sequences) == model.seq  # every accepted part accounted for, once
    assert acked_sequences == sorted(set(acked_sequences))  # in order, no duplicates
    hs.stop()
    assert hs.outputs()[Out.STATUS] == 0
