"""1,000 consecutive parts through the real server: every result acknowledged once, in order.

The PLC here pipelines like a real one: it triggers the next part while the previous result
is still waiting, polls as fast as loopback allows, and writes its control word once per cycle.
"""

from __future__ import annotations

import time

from station.plc.registers import Control, Out, Status, join_u32, split_u32
from tests.plc.parts import TinyInspector

PARTS = 1000


def test_thousand_parts_none_lost_none_duplicated_in_order(make_rig):
    defective = set(range(7, PARTS + 1, 7))
    rig = make_rig(inspector=TinyInspector(defective=defective), result_buffer=8, heartbeat_timeout_ms=2000)
    plc = rig.master()
    next_part, trig_raised, ack_raised = 1, False, False
    accepted, refused, results = [], 0, []
    control = 0
    cycles = 0
    t0 = time.monotonic()
    while len(results) < PARTS:
        assert time.monotonic() - t0 < 120, f"stalled after {len(results)} results"
        cycles += 1
        out = plc.outputs()
        st = Status(out[Out.STATUS])
        new = control
        if cycles % 20 == 0:
            new ^= Control.HEARTBEAT
        if not trig_raised and next_part <= PARTS and st & Status.READY:
            new |= Control.TRIGGER
            trig_raised = True
        elif trig_raised and st & Status.TRIGGER_ACK:
            accepted.append(next_part)
            next_part += 1
            new &= ~Control.TRIGGER
        elif trig_raised and st & Status.TRIGGER_FAILED:
            refused += 1  # offered again on a later cycle
            new &= ~Control.TRIGGER
        if trig_raised and not new & Control.TRIGGER:
            trig_raised = False
        if st & Status.RESULT_VALID and not ack_raised:
            assert bool(st & Status.PASS) != bool(st & Status.REJECT)
            results.append((out[Out.SEQUENCE], join_u32(out[Out.PART_ID_HI], out[Out.PART_ID_LO]), out[Out.RESULT_CODE], bool(st & Status.PASS)))
            new |= Control.RESULT_ACK
            ack_raised = True
        elif ack_raised and not st & Status.RESULT_VALID:
            new &= ~Control.RESULT_ACK
            ack_raised = False
        if new != control:
            if new & Control.TRIGGER and not control & Control.TRIGGER:
                hi, lo = split_u32(next_part)
                rr = plc.client.write_registers(0, [new, 0, hi, lo], device_id=1)
            else:
                rr = plc.client.write_register(0, new, device_id=1)
            assert not rr.isError(), rr
            control = new
    elapsed = time.monotonic() - t0
    print(f"\n{PARTS} parts in {elapsed:.1f} s ({cycles} PLC cycles, {refused} triggers refused while full)")

    assert accepted == list(range(1, PARTS + 1))
    assert [pid for _, pid, _, _ in results] == list(range(1, PARTS + 1))  # none lost / duplicated, in order
    assert [seq for seq, _, _, _ in results] == [(i & 0xFFFF) for i in range(1, PARTS + 1)]
    for _, pid, code, passed in results:
        assert passed == (pid not in defective)
        assert code == (3 if pid in defective else 0)
    assert rig.pipeline.stats.parts == PARTS and rig.pipeline.stats.rejected == len(defective)
    assert rig.service.handshake.acknowledged == PARTS
    final = plc.outputs()
    assert final[Out.ACQUISITION_ID] == PARTS
    assert join_u32(final[Out.INSPECTED_HI], final[Out.INSPECTED_LO]) == PARTS
    assert not rig.alarms.active()
