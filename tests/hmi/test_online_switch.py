"""The operator's online/offline switch (station.online): the HMI and the PLC's SET_OFFLINE drive
one state, which a real Modbus client reads in the status register while the HMI switches."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from station.plc.registers import Control, ErrorCode, Out, Status
from tests.hmi.browser import free_port
from tests.hmi.conftest import PASSWORDS, ROLES, login, only, simulated_hmi
from tests.hmi.stand import make_station
from tests.plc.conftest import PlcMaster

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def line(tmp_path):
    """(ctx, new_user, plc): a station with its Modbus server, the HMI on it, a PLC client."""
    port = free_port()
    station = make_station(tmp_path, plc_port=port)
    station.start()
    plc = PlcMaster(port)
    try:
        async with simulated_hmi(station) as (ctx, new_user):
            for name, role in ROLES.items():
                ctx.auth.create_user(name, role, PASSWORDS[name], "test")
            yield ctx, new_user, plc
    finally:
        plc.close()
        station.stop()


async def registers(plc: PlcMaster, predicate, what: str):
    """The output block once ``predicate`` holds (the PLC keeps beating meanwhile)."""
    try:
        return await asyncio.to_thread(plc.wait, predicate, 5.0)
    except AssertionError as exc:
        raise AssertionError(f"registers never showed {what}: {exc}") from None


def online(o) -> bool:
    return bool(o[Out.STATUS] & Status.ONLINE)


def ready(o) -> bool:
    return bool(o[Out.STATUS] & Status.READY)


async def test_operator_switches_the_station_offline_and_the_plc_sees_it(line):
    ctx, new_user, plc = line
    await registers(plc, lambda o: online(o) and ready(o), "ONLINE and READY at start")
    user = await login(new_user(), "olga")  # an operator may switch: the PLC diverts refused parts
    await user.should_see("ONLINE", marker="online-state", retries=50)

    user.find(marker="go-offline").click()
    user.find(marker="confirm-offline").click()
    await registers(plc, lambda o: not online(o) and not ready(o), "ONLINE and READY low")
    assert ctx.station.pipeline.offline
    await user.should_see("OFFLINE by olga", marker="online-state", retries=50)
    await user.should_see("OFFLINE", marker="station-status", retries=50)
    refused = await asyncio.to_thread(plc.trigger, 4711)
    assert refused[Out.STATUS] & Status.TRIGGER_FAILED and refused[Out.ERROR_CODE] == ErrorCode.STATION_OFFLINE
    assert ctx.station.stats.parts == 0  # nothing inspected while offline

    # the PLC also asks for offline; the operator's "online" withdraws only the operator's request
    await asyncio.to_thread(plc.set, Control.SET_OFFLINE)
    await user.should_see("by the PLC (SET_OFFLINE)", marker="online-state", retries=50)
    await user.should_see(marker="go-online", retries=50)
    user.find(marker="go-online").click()
    await user.should_see("stays offline")
    await user.should_see("OFFLINE by the PLC (SET_OFFLINE)", marker="online-state", retries=50)
    assert not online(await asyncio.to_thread(plc.outputs))
    assert only(user, "online-state").text == "OFFLINE by the PLC (SET_OFFLINE)"

    # the PLC drops SET_OFFLINE: nobody holds the station offline any more
    await asyncio.to_thread(plc.drop, Control.SET_OFFLINE)
    await registers(plc, lambda o: online(o) and ready(o), "ONLINE and READY again")
    await user.should_see("ONLINE", marker="online-state", retries=50)
    await asyncio.to_thread(plc.write_control, plc.control | Control.CLEAR_ERROR)  # the refused trigger's error
    await asyncio.to_thread(plc.drop, Control.CLEAR_ERROR)
    ack = await asyncio.to_thread(plc.trigger, 4712)
    assert ack[Out.STATUS] & Status.TRIGGER_ACK
    result = await asyncio.to_thread(plc.take_result)
    assert result[Out.PART_ID_LO] == 4712

    audit = [(r.actor, r.action, r.target, r.before, r.after) for r in reversed(ctx.store.audit_log())
             if r.action.startswith("station.")]
    assert audit == [
        ("olga", "station.offline", "demo", "online", "offline: operator (olga)"),
        ("olga", "station.online", "demo", "offline: operator (olga), plc (SET_OFFLINE)", "offline: plc (SET_OFFLINE)"),
    ]


async def test_the_plc_dropping_set_offline_keeps_an_operators_offline(line):
    ctx, new_user, plc = line
    await registers(plc, lambda o: online(o) and ready(o), "ONLINE and READY at start")
    user = await login(new_user(), "olga")
    await asyncio.to_thread(plc.set, Control.SET_OFFLINE)
    await registers(plc, lambda o: not online(o), "ONLINE low from SET_OFFLINE")
    user.find(marker="go-offline").click()
    user.find(marker="confirm-offline").click()
    await asyncio.to_thread(plc.drop, Control.SET_OFFLINE)
    await user.should_see("OFFLINE by olga", marker="online-state", retries=50)
    await asyncio.sleep(0.2)  # well past the PLC ticker's 10 ms
    assert not online(await asyncio.to_thread(plc.outputs))

    user.find(marker="go-online").click()
    await registers(plc, lambda o: online(o) and ready(o), "ONLINE and READY after the operator's online")
    await user.should_see("ONLINE", marker="online-state", retries=50)


async def test_an_operators_offline_survives_a_restart_and_the_plc_sees_it(tmp_path):
    port = free_port()
    first = make_station(tmp_path, plc_port=port)
    first.start()
    try:
        async with simulated_hmi(first) as (ctx, new_user):
            ctx.auth.create_user("olga", "operator", PASSWORDS["olga"], "test")
            user = await login(new_user(), "olga")
            user.find(marker="go-offline").click()
            user.find(marker="confirm-offline").click()
            await user.should_see("OFFLINE by olga", marker="online-state", retries=50)
    finally:
        first.stop()

    second = make_station(tmp_path, plc_port=port)
    second.start()
    plc = PlcMaster(port)
    try:
        assert second.pipeline.offline and second.pipeline.online.describe() == "offline: operator (olga)"
        out = await registers(plc, lambda o: o[Out.HEARTBEAT_COUNT] > 0, "the station's heartbeat")
        assert not online(out) and not ready(out)
        async with simulated_hmi(second) as (ctx, new_user):
            user = await login(new_user(), "olga")
            await user.should_see("OFFLINE by olga", marker="online-state", retries=50)
            user.find(marker="go-online").click()
            await registers(plc, lambda o: online(o) and ready(o), "ONLINE and READY after the operator's online")
    finally:
        plc.close()
        second.stop()
    third = make_station(tmp_path)  # the "online" was kept too
    assert not third.pipeline.offline

