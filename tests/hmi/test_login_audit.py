"""Issue 19, item 4: logins audited with user and client address; lockout keyed on user AND
address (one address cannot lock the admin out for everybody); locks survive a restart.

A real SQLite history database (the HMI store); the simulated browser for the page flows."""

from __future__ import annotations

import time

import pytest

from station.db.engine import make_engine
from station.hmi.auth import Authenticator, LoginThrottle
from station.hmi.store import HmiStore, ensure_schema
from tests.hmi.conftest import PASSWORDS, login, refused_login, simulated_hmi

ATTACKER, ADMIN_DESK, PANEL = "10.0.0.66", "10.0.0.5", "10.0.0.7"


class Clock:
    def __init__(self):
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'station.db'}")
    ensure_schema(engine)
    yield HmiStore(engine)
    engine.dispose()


def auth_with_users(store, clock=None) -> Authenticator:
    auth = Authenticator(store, LoginThrottle(max_failures=3, lockout_s=60, clock=clock or time.monotonic))
    for name in ("ada", "emil"):
        if store.get_user(name) is None:
            auth.create_user(name, "admin" if name == "ada" else "engineer", PASSWORDS[name], "test")
    return auth


def auth_events(store) -> list[tuple[str, str, str, str | None]]:
    return [(a.action, a.actor, a.target, a.after) for a in reversed(store.audit_log(500)) if a.action.startswith("auth.")]


def test_guessing_from_one_address_does_not_lock_the_admin_out_elsewhere(store):
    auth = auth_with_users(store)
    for _ in range(3):
        assert not auth.login("ada", "guess-guess-1", ATTACKER).ok
    refused = auth.login("ada", PASSWORDS["ada"], ATTACKER)
    assert not refused.ok and "too many failed logins" in refused.message  # locked: this pair
    assert auth.login("ada", PASSWORDS["ada"], ADMIN_DESK).ok  # the admin at her desk: in
    assert auth.login("emil", PASSWORDS["emil"], ATTACKER).ok  # another name from there: its own count
    assert auth_events(store) == [
        ("auth.login_failed", "ada", ATTACKER, "wrong password"),
        ("auth.login_failed", "ada", ATTACKER, "wrong password"),
        ("auth.login_failed", "ada", ATTACKER, "wrong password"),
        ("auth.lockout", "ada", ATTACKER, f"ada from {ATTACKER} locked for 60 s"),
        ("auth.login", "ada", ADMIN_DESK, "role=admin"),
        ("auth.login", "emil", ATTACKER, "role=engineer"),
    ]


def test_one_address_guessing_many_names_is_locked_as_a_whole(store):
    auth = auth_with_users(store)
    names = [f"guess{i}" for i in range(12)]  # 3 failures per pair x 4: the address's limit
    for name in names:
        assert not auth.login(name, "whatever-password", ATTACKER).ok
    assert ("auth.lockout", "guess11", ATTACKER, f"every name from {ATTACKER} locked for 60 s") in auth_events(store)
    assert not auth.login("emil", PASSWORDS["emil"], ATTACKER).ok  # right password, locked address
    assert auth.login("emil", PASSWORDS["emil"], PANEL).ok
    reasons = {e[3] for e in auth_events(store) if e[0] == "auth.login_failed"}
    assert reasons == {"unknown user"}


def test_a_restart_does_not_lift_a_lock(store):
    clock = Clock()
    auth = auth_with_users(store, clock)
    for _ in range(3):
        auth.login("ada", "guess-guess-2", ATTACKER)
    assert auth.throttle.wait_s(f"ada@{ATTACKER}") == 60
    clock.t += 20
    restarted = auth_with_users(store, clock)  # a new process reads the audit log
    wait = restarted.throttle.wait_s(f"ada@{ATTACKER}")
    assert 35 <= wait <= 61  # the same lock, less the time that passed (wall clock vs. test clock)
    assert not restarted.login("ada", PASSWORDS["ada"], ATTACKER).ok
    assert restarted.login("ada", PASSWORDS["ada"], ADMIN_DESK).ok


def test_disabled_user_failure_is_audited_with_its_reason(store):
    auth = auth_with_users(store)
    store.update_user("emil", "ada", disabled=True)
    assert not auth.login("emil", PASSWORDS["emil"], PANEL).ok
    assert auth_events(store)[-1] == ("auth.login_failed", "emil", PANEL, "user disabled")



@pytest.mark.asyncio
async def test_login_logout_and_expiry_are_audited_with_the_client_address(station):
    async with simulated_hmi(station) as (ctx, new_user):
        ctx.auth.create_user("emil", "engineer", PASSWORDS["emil"], "test")
        await refused_login(new_user(), "emil", "not-the-password")
        user = await login(new_user(), "emil", "/history")
        user.find(marker="signout").click()
        await user.should_see(marker="login", retries=30)
        # a session left idle past the timeout
        user = await login(new_user(), "emil", "/history")
        from nicegui import app

        for data in app.storage._users.values():  # noqa: SLF001 (each browser's server-side session)
            if "auth" in data:
                data["auth"] = {**data["auth"], "last_seen": time.time() - ctx.session_timeout_s - 1}
        await user.open("/history")
        await user.should_see(marker="login")
        events = [(a, actor) for a, actor, _, _ in auth_events(ctx.store)]
        assert events == [("auth.login_failed", "emil"), ("auth.login", "emil"), ("auth.logout", "emil"),
                          ("auth.login", "emil"), ("auth.session_expired", "emil")]
        addresses = {target for _, _, target, _ in auth_events(ctx.store)}
        assert addresses == {"127.0.0.1"}  # the simulated browser's address, as the server saw it
