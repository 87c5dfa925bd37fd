"""Operator live view with NiceGUI's simulated user: login, live updates, counters, alarms."""

from __future__ import annotations

import pytest

from station.hmi.pages.operator import data_url

from tests.hmi.conftest import login, only, refused_login, run_parts, wait_rendered

pytestmark = pytest.mark.asyncio


async def test_start_page_needs_login(hmi):
    ctx, new_user = hmi
    user = new_user()
    await user.open("/")
    await user.should_see("Sign in")
    await user.should_not_see(marker="banner")


async def test_wrong_password_is_refused_without_saying_which(hmi):
    ctx, new_user = hmi
    user = new_user()
    await refused_login(user, "olga", "not-her-password")
    await user.should_not_see(marker="whoami")


async def test_live_view_follows_parts(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "olga")
    await user.should_see("WAITING FOR A PART")
    run_parts(ctx.station, 6)
    await user.should_see("Last parts")
    await wait_rendered(ctx, 6)
    latest = ctx.state.latest()
    assert latest is not None and latest.sequence == 6
    expected = "PASS" if latest.passed else "REJECT"
    await user.should_see(expected, marker="banner", retries=50)
    c = ctx.state.counters()
    assert c.parts == 6 and c.passed + c.rejected == 6
    await user.should_see(str(c.parts), marker="count-parts", retries=50)
    await user.should_see(f"part {latest.part_id} ", marker="part", retries=50)
    await user.should_see(marker=f"thumb-{latest.sequence}", retries=50)
    if not latest.passed:
        await user.should_see(latest.reason, marker="reason", retries=50)


async def test_counters_change_together_with_the_banner(hmi):
    """The counters are rendered in the same update as the verdict they count (they used to
    follow up to a second later, on the slow refresh)."""
    import asyncio

    ctx, new_user = hmi
    user = await login(new_user(), "olga")
    await user.should_see("WAITING FOR A PART")
    for k in range(1, 4):
        if k > 1:
            user.find(marker="live-image").trigger("load")  # the browser has the last image: the next may come
        run_parts(ctx.station, 1, first_id=k)
        for _ in range(100):
            if only(user, "part").text.startswith(f"part {k} "):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"the banner never showed part {k}")
        assert int(only(user, "count-parts").text) >= k, "the parts counter lags the banner"


async def test_live_image_route_serves_the_latest_jpeg(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "olga")
    seq = run_parts(ctx.station, 2)
    await wait_rendered(ctx, seq)
    resp = await user.http_client.get(f"/hmi/live/{seq}.jpg")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert resp.content[:2] == b"\xff\xd8"
    anonymous = new_user()
    assert (await anonymous.http_client.get(f"/hmi/live/{seq}.jpg")).status_code == 401


async def test_alarm_shows_and_operator_acknowledges(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "olga")
    await user.should_see(marker="no-alarms")
    ctx.station.alarms.raise_("plc_offline", "plc", "PLC heartbeat lost for 2.0 s")
    await user.should_see("PLC heartbeat lost for 2.0 s", retries=50)
    user.find(marker="ack-plc_offline").click()
    assert any(a.acknowledged for a in ctx.station.alarms.all() if a.key == "plc_offline")
    await user.should_see("acknowledged", retries=50)
    ctx.station.alarms.clear("plc_offline")
    await user.should_see(marker="no-alarms", retries=50)


async def test_station_state_and_connections_are_words_not_only_colours(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "olga")
    await user.should_see("READY", marker="station-status", retries=50)
    await user.should_see("camera top: online")
    await user.should_see("PLC: not configured")
    await user.should_see("Recipe: demo-part v1")
    ctx.station.pipeline.online.set_offline("operator", True, "olga")
    await user.should_see("OFFLINE", marker="station-status", retries=50)


async def test_one_image_in_flight_per_browser(hmi):
    """A browser that has not finished loading the last image gets no new one (nor its verdict)."""
    ctx, new_user = hmi
    user = await login(new_user(), "olga")
    run_parts(ctx.station, 1, first_id=101)
    await wait_rendered(ctx, 1)
    await user.should_see("part 101 ", marker="part", retries=50)
    image = only(user, "live-image")
    assert image.props["src"] == data_url(ctx.state.result(1).image_jpeg)
    run_parts(ctx.station, 1, first_id=102)
    await wait_rendered(ctx, 2)
    await user.should_see("Last parts")
    import asyncio

    await asyncio.sleep(1.0)  # several polls pass: the browser has not reported the first image
    await user.should_see("part 101 ", marker="part")
    assert image.props["src"] == data_url(ctx.state.result(1).image_jpeg)
    user.find(marker="live-image").trigger("load")  # the browser reports it has the image
    await user.should_see("part 102 ", marker="part", retries=30)
    assert image.props["src"] == data_url(ctx.state.result(2).image_jpeg)


async def test_thumbnail_click_enlarges_that_part(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "olga")
    run_parts(ctx.station, 3, first_id=201)
    await wait_rendered(ctx, 3)
    await user.should_see(marker="thumb-1", retries=30)
    user.find(marker="thumb-1").click()
    first = ctx.state.result(1)
    await user.should_see(f"part 201 · {first.reason}", retries=30)
