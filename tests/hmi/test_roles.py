"""Every page against every role: who may open what; sign-out; session timeout; disabled users."""

from __future__ import annotations

import time

import pytest

from station.hmi.auth import LoginThrottle
from tests.hmi.conftest import PASSWORDS, field_error, login, simulated_hmi

pytestmark = pytest.mark.asyncio

PAGES = {"/": "operator", "/history": "engineer", "/charts": "engineer", "/recipes": "engineer", "/users": "admin",
         "/settings": "admin"}
RANK = {"operator": 0, "engineer": 1, "admin": 2}


@pytest.mark.parametrize("who", ["olga", "emil", "ada"])
async def test_each_role_sees_only_its_pages(hmi, who):
    ctx, new_user = hmi
    user = await login(new_user(), who)
    role = {"olga": "operator", "emil": "engineer", "ada": "admin"}[who]
    for path, needed in PAGES.items():
        await user.open(path)
        if RANK[role] >= RANK[needed]:
            await user.should_not_see(marker="forbidden")
            await user.should_see(marker="whoami")
        else:
            await user.should_see(marker="forbidden")
            await user.should_see(f"needs the {needed} role")
    # the navigation offers exactly the allowed pages
    await user.open("/")
    for label, needed in (("History", "engineer"), ("Users", "admin")):
        if RANK[role] >= RANK[needed]:
            await user.should_see(marker=f"nav-{label}")
        else:
            await user.should_not_see(marker=f"nav-{label}")


async def test_anonymous_is_sent_to_login_everywhere(hmi):
    ctx, new_user = hmi
    user = new_user()
    for path in PAGES:
        await user.open(path)
        await user.should_see(marker="login")
    await user.open("/inspection/1")
    await user.should_see(marker="login")


async def test_sign_out(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/history")
    user.find(marker="signout").click()
    await user.should_see(marker="login", retries=30)
    await user.open("/history")
    await user.should_see(marker="login")


async def test_idle_session_expires(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/history")
    # age the session past the timeout, as an idle browser would
    from nicegui import app

    storage = app.storage._users  # noqa: SLF001 (the server-side store of each browser's session)
    for data in storage.values():
        if "auth" in data:
            data["auth"] = {**data["auth"], "last_seen": time.time() - ctx.session_timeout_s - 1}
    await user.open("/history")
    await user.should_see(marker="login")


async def test_disabled_user_loses_access_at_once(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/history")
    ctx.store.update_user("emil", "ada", disabled=True)
    await user.open("/history")
    await user.should_see(marker="login")
    again = new_user()
    await again.open("/login")
    again.find("username").type("emil")
    again.find("password").type(PASSWORDS["emil"])
    again.find("login").click()
    await field_error(again, "password", "wrong user name or password")


async def test_failed_logins_are_rate_limited(station):
    async with simulated_hmi(station, throttle=LoginThrottle(max_failures=3, lockout_s=60)) as (ctx, new_user):
        ctx.auth.create_user("emil", "engineer", PASSWORDS["emil"], "test")
        user = new_user()
        await user.open("/login")
        for _ in range(3):
            user.find("username").clear().type("emil")
            user.find("password").clear().type("guess-guess-guess")
            user.find("login").click()
            await field_error(user, "password", "wrong user name or password")
        # locked now: even the right password is refused, with the wait
        user.find("username").clear().type("emil")
        user.find("password").clear().type(PASSWORDS["emil"])
        user.find("login").click()
        await field_error(user, "password", "too many failed logins")
        await user.should_not_see(marker="whoami")
        info = ctx.store.get_user("emil")
        assert info.failed_logins == 3
        actions = [a.action for a in reversed(ctx.store.audit_log(20)) if a.action.startswith("auth.")]
        assert actions == ["auth.login_failed"] * 3 + ["auth.lockout"]  # the refused 4th try is not written


async def test_demo_autologin_opens_only_the_operator_view(tmp_path):
    from tests.hmi.stand import make_station

    st = make_station(tmp_path, demo_autologin=True)
    st.start()
    try:
        async with simulated_hmi(st) as (ctx, new_user):
            user = new_user()
            await user.open("/")
            await user.should_see(marker="banner")
            await user.open("/history")
            await user.should_see(marker="forbidden")
    finally:
        st.stop()


async def test_settings_page_shows_configuration_and_health(hmi):
    from tests.hmi.conftest import only, run_parts

    ctx, new_user = hmi
    run_parts(ctx.station, 3)
    user = await login(new_user(), "ada", "/settings")
    await user.should_see('"station_id": "demo"', marker="station-config")
    await user.should_see("written: 3", marker="writer-stats", retries=40)
    stages = {r["stage"] for r in only(user, "latency").rows}
    assert {"acquire", "analyse", "total"} <= stages


async def test_login_never_redirects_off_site(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "olga", "//evil.example/phish")
    await user.should_see(marker="banner")  # landed on the operator view of this station


async def test_a_page_needing_a_higher_role_offers_a_sign_in_that_returns_to_it(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "olga")
    await user.open("/history")
    await user.should_see(marker="forbidden")
    (link,) = user.find(marker="sign-in-link").elements
    assert link.props["href"] == "/login?next=/history&switch=1"
    assert "engineer" in link.text
    user.find(marker="sign-in-link").click()
    await user.should_see("Signed in as olga (operator)", marker="signed-in-as", retries=50)
    user.find("username").type("emil")
    user.find("password").type(PASSWORDS["emil"])
    user.find("login").click()
    await user.should_see("inspections match", retries=50)  # the history page, as emil
    await user.should_see("emil (engineer)", marker="whoami")
    await user.should_not_see(marker="forbidden")
    actions = [(r.actor, r.action) for r in reversed(ctx.store.audit_log()) if r.action.startswith("auth.")]
    # emil signed in, and olga's session ended with it
    assert actions[-3:] == [("olga", "auth.login"), ("emil", "auth.login"), ("olga", "auth.logout")]


async def test_the_sign_in_link_of_the_demo_operator(tmp_path):
    """The demo's automatic operator session gets the same way to an engineer's page."""
    from tests.hmi.stand import make_station

    st = make_station(tmp_path, demo_autologin=True)
    st.start()
    try:
        async with simulated_hmi(st) as (ctx, new_user):
            ctx.auth.create_user("emil", "engineer", PASSWORDS["emil"], "test")
            user = new_user()
            await user.open("/recipes")
            await user.should_see(marker="forbidden")
            user.find(marker="sign-in-link").click()
            await user.should_see(marker="login", retries=50)
            user.find("username").type("emil")
            user.find("password").type(PASSWORDS["emil"])
            user.find("login").click()
            await user.should_see("emil (engineer)", marker="whoami", retries=50)
            await user.should_not_see(marker="forbidden")
            await user.should_see("Save", retries=50)  # the recipe editor
    finally:
        st.stop()
