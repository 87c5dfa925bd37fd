"""The login page. Failed logins are rate-limited (hmi/auth.py); the message never says which
part was wrong."""

from __future__ import annotations

from nicegui import app, run, ui

from station.hmi.auth import sign_in
from station.hmi.pages.layout import DEMO_USER, client_address, current_user, frame


def _safe_next(target: str | None) -> str:
    # only local paths: an attacker's link must not send a fresh login elsewhere
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def register(ctx) -> None:
    @ui.page("/login")
    def login_page(next: str = "/", switch: str = ""):  # noqa: A002 (the query parameter's name)
        frame(ctx, None, "Sign in")
        client_ip = client_address()
        target = _safe_next(next)
        user = current_user(ctx)
        # ``switch``: a page refused this user for their role; another user signs in in their place
        if user is not None and user.username != DEMO_USER and not switch:
            ui.navigate.to(target)
            return

        async def try_login() -> None:
            name_in.error = None
            password_in.error = None
            if not name_in.value.strip():
                name_in.error = "enter your user name"
                return
            button.disable()
            try:
                result = await run.io_bound(ctx.auth.login, name_in.value, password_in.value or "", client_ip)
            finally:
                button.enable()
            if not result.ok:
                password_in.value = ""  # before the error: a value change re-validates and clears it
                password_in.error = result.message
                return
            if user is not None and user.username not in (DEMO_USER, result.username):
                ctx.auth.logout(user.username, client_ip)  # the session changes hands
            sign_in(app.storage.user, result.username, result.role)
            ui.navigate.to(target)

        with ui.card().classes("mx-auto mt-16 p-8 w-[28rem] gap-4").style("background:#111827"):
            ui.label("Sign in").classes("text-3xl font-bold")
            if user is not None and user.username != DEMO_USER:
                ui.label(f"Signed in as {user.username} ({user.role}); signing in replaces that session.") \
                    .classes("text-lg text-gray-300").mark("signed-in-as")
            name_in = ui.input("User name").props("outlined dark autofocus input-class=text-xl").classes("w-full").mark("username")
            password_in = ui.input("Password", password=True).props("outlined dark input-class=text-xl").classes("w-full").mark("password")
            password_in.on("keydown.enter", try_login)
            button = ui.button("Sign in", on_click=try_login).props("size=lg").classes("w-full").mark("login")
