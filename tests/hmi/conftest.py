"""HMI test fixtures: a real Station (tests/hmi/stand.py) and NiceGUI's simulated ``User``
against the HMI mounted on it (fast, no browser)."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from nicegui import core, ui
from nicegui.functions.download import download
from nicegui.functions.navigate import Navigate
from nicegui.functions.notify import notify
from nicegui.testing.general import nicegui_reset_globals, prepare_simulation
from nicegui.testing.user import User

from tests.hmi.stand import REPO, make_station  # noqa: F401 (REPO re-exported for tests)

PASSWORDS = {"olga": "operator-pass-1", "emil": "engineer-pass-1", "ada": "admin-pass-12"}
ROLES = {"olga": "operator", "emil": "engineer", "ada": "admin"}


@pytest.fixture
def station(tmp_path: Path):
    st = make_station(tmp_path, history=True)
    st.start()
    yield st
    st.stop()


@asynccontextmanager
async def simulated_hmi(station, **mount_kwargs):
    """Mount the HMI on ``station`` in a fresh NiceGUI app; yields (ctx, new_user)."""
    from station.hmi.app import mount

    with nicegui_reset_globals():
        os.environ["NICEGUI_USER_SIMULATION"] = "true"
        try:
            prepare_simulation()
            ctx = mount(station, **mount_kwargs)
            ui.run(storage_secret="hmi test secret")
            async with core.app.router.lifespan_context(core.app):
                clients = []

                def new_user() -> User:
                    c = httpx.AsyncClient(transport=httpx.ASGITransport(core.app), base_url="http://test")
                    clients.append(c)
                    return User(c)

                try:
                    yield ctx, new_user
                finally:
                    for c in clients:
                        await c.aclose()
                    ctx.state.stop()
        finally:
            os.environ.pop("NICEGUI_USER_SIMULATION", None)
            ui.navigate = Navigate()
            ui.notify = notify
            ui.download = download


@pytest_asyncio.fixture
async def hmi(station):
    """(ctx, new_user) with three accounts: olga (operator), emil (engineer), ada (admin)."""
    async with simulated_hmi(station) as (ctx, new_user):
        for name, role in ROLES.items():
            ctx.auth.create_user(name, role, PASSWORDS[name], "test")
        yield ctx, new_user


async def login(user: User, name: str, path: str = "/") -> User:
    await user.open(f"/login?next={path}")
    user.find("username").type(name)
    user.find("password").type(PASSWORDS[name])
    user.find("login").click()
    await user.should_see(marker="whoami", retries=50)
    return user


async def refused_login(user: User, name: str, password: str) -> None:
    """Sign in with a wrong password on the login page; waits for the (generic) refusal."""
    await user.open("/login")
    user.find("username").type(name)
    user.find("password").type(password)
    user.find("login").click()
    await field_error(user, "password", "wrong user name or password")


async def field_error(user: User, marker: str, expected: str, retries: int = 50) -> str:
    """Wait until the input marked ``marker`` shows an error containing ``expected``; returns it."""
    import asyncio

    error = None
    for _ in range(retries):
        (element,) = user.find(marker=marker).elements
        error = element.error
        if error and expected in error:
            return error
        await asyncio.sleep(0.1)
    raise AssertionError(f"field {marker!r} shows error {error!r}, expected {expected!r}")


async def wait_rendered(ctx, sequence: int, timeout_s: float = 10.0) -> None:
    """Wait until the HMI state shows part ``sequence`` (its renderer thread is asynchronous)."""
    import asyncio

    for _ in range(int(timeout_s / 0.05)):
        latest = ctx.state.latest()
        if latest is not None and latest.sequence >= sequence:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"HMI did not render part {sequence}; latest {ctx.state.latest()}")


async def wait_set(event, timeout_s: float = 10.0) -> None:
    """Wait until a ``threading.Event`` set by a thread (a held query) is set; fail if it is not."""
    import asyncio

    for _ in range(int(timeout_s / 0.05)):
        if event.is_set():
            return
        await asyncio.sleep(0.05)
    assert event.is_set(), f"not set within {timeout_s} s"


def run_parts(station, n: int, first_id: int = 1) -> int:
    """Inspect ``n`` parts one after another; returns the last sequence (history flushed)."""
    seq = 0
    for i in range(n):
        seq = station.pipeline.trigger(first_id + i)
        assert station.pipeline.wait_published(seq, 10)
    if station.history is not None:
        assert station.history.flush(10)
    return seq


def only(user: User, marker: str):
    (element,) = user.find(marker=marker).elements
    return element


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A real headless Chromium (tests/hmi/browser.py), its downloads in a folder of its own."""
    from tests.hmi.browser import start_chromium

    driver = start_chromium(tmp_path_factory.mktemp("downloads"))
    yield driver
    driver.quit()
