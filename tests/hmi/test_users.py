"""User administration page, and `station users` on the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.hmi.conftest import REPO, field_error, login, only


@pytest.mark.asyncio
async def test_admin_creates_user_who_can_log_in(hmi):
    ctx, new_user = hmi
    admin = await login(new_user(), "ada", "/users")
    admin.find(marker="new-name").type("quentin")
    only(admin, "new-role").value = "engineer"
    admin.find(marker="new-password").type("quality-first-7")
    admin.find(marker="create-user").click()
    await admin.should_see(marker="user-quentin", retries=30)
    info = ctx.store.get_user("quentin")
    assert info.role == "engineer" and not info.disabled
    with ctx.store.session() as s:
        from station.db.models import UserRow
        from sqlalchemy import select

        stored = s.scalar(select(UserRow.password_hash).where(UserRow.username == "quentin"))
    assert stored.startswith("$argon2") and "quality-first-7" not in stored
    assert any(a.action == "user.create" and a.target == "quentin" and a.actor == "ada" for a in ctx.store.audit_log())
    q = new_user()
    await q.open("/login")
    q.find("username").type("quentin")
    q.find("password").type("quality-first-7")
    q.find("login").click()
    await q.should_see("quentin (engineer)", retries=50)


@pytest.mark.asyncio
@pytest.mark.parametrize("name,password,field,message", [
    ("x", "long-enough-pw", "new-name", "2 to 64"),
    ("<script>", "long-enough-pw", "new-name", "lower-case letters"),
    ("newbie", "short", "new-password", "at least 10"),
    ("newbie", "newbie", "new-password", "at least 10"),
    ("ada", "another-admin-pw", "new-name", "already exists"),
])
async def test_bad_new_user_is_refused_on_the_field(hmi, name, password, field, message):
    ctx, new_user = hmi
    before = [u.username for u in ctx.store.users()]
    admin = await login(new_user(), "ada", "/users")
    admin.find(marker="new-name").type(name)
    admin.find(marker="new-password").type(password)
    admin.find(marker="create-user").click()
    await field_error(admin, field, message)
    assert [u.username for u in ctx.store.users()] == before


@pytest.mark.asyncio
async def test_last_admin_cannot_be_disabled(hmi):
    ctx, new_user = hmi
    admin = await login(new_user(), "ada", "/users")
    admin.find(marker="toggle-ada").click()
    await admin.should_see("last active admin", retries=30)
    assert not ctx.store.get_user("ada").disabled
    admin.find(marker="toggle-olga").click()
    for _ in range(30):
        if ctx.store.get_user("olga").disabled:
            break
        await admin.should_see(marker="user-list")
    assert ctx.store.get_user("olga").disabled


@pytest.mark.asyncio
async def test_role_change_applies_to_a_signed_in_user(hmi):
    ctx, new_user = hmi
    emil = await login(new_user(), "emil", "/history")
    await emil.should_not_see(marker="forbidden")
    ctx.store.update_user("emil", "ada", role="operator")
    await emil.open("/history")
    await emil.should_see(marker="forbidden")


def test_cli_users_add_reads_stdin_and_refuses_weak_passwords(tmp_path):
    url = f"sqlite:///{tmp_path / 'users.db'}"

    def cli(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "station.cli", "users", *args, "--db", url], input=stdin,
                              capture_output=True, text=True, cwd=REPO, timeout=120)

    weak = cli("add", "--role", "admin", "root", stdin="password\n")
    assert weak.returncode == 1 and "at least 10" in weak.stderr
    ok = cli("add", "--role", "admin", "root", stdin="a-long-admin-secret\n")
    assert ok.returncode == 0, ok.stderr
    assert "user root (admin) created" in ok.stdout
    again = cli("add", "--role", "operator", "root", stdin="another-long-one\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    listed = cli("list")
    assert "root" in listed.stdout and "admin" in listed.stdout
    from station.db.engine import make_engine
    from station.hmi.auth import Authenticator
    from station.hmi.store import HmiStore

    auth = Authenticator(HmiStore(make_engine(url)))
    assert auth.login("root", "a-long-admin-secret").ok
    assert not auth.login("root", "password").ok
