"""What every page shares: the access check, the header with navigation, the look.

Readable from two metres: large type, high contrast on a dark background, and every colour
comes with a word (PASS / REJECT / REVIEW, READY / OFFLINE) so nothing depends on colour alone.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import RedirectResponse
from nicegui import app, ui

from station.hmi.auth import SessionUser, allows, session_user, sign_in, sign_out
from station.hmi.security import KEEPALIVE_PATH

NAV = [  # (path, label, role needed)
    ("/", "Live", "operator"),
    ("/review", "Review", "operator"),
    ("/history", "History", "engineer"),
    ("/charts", "Charts", "engineer"),
    ("/recipes", "Recipes", "engineer"),
    ("/users", "Users", "admin"),
    ("/settings", "Settings", "admin"),
]

GREEN, RED, AMBER, BLUE, GREY = "#15803d", "#b91c1c", "#b45309", "#1d4ed8", "#4b5563"
# every verdict has a word and a colour: REVIEW (sent to a person) is amber, never green
VERDICT_LOOK = {"pass": ("PASS", GREEN), "reject": ("REJECT", RED), "review": ("REVIEW", AMBER)}
VERDICT_TEXT = {"pass": "#4ade80", "reject": "#f87171", "review": "#fbbf24"}  # on the dark background


def verdict_look(outcome: str) -> tuple[str, str]:
    """(word, colour) of a verdict; anything unknown shows as a REJECT (fail-safe)."""
    return VERDICT_LOOK.get(str(getattr(outcome, "value", outcome)), VERDICT_LOOK["reject"])
DEMO_USER = "demo-operator"


def client_address() -> str:
    """The address of the browser being served (through a trusted proxy: the one it forwarded)."""
    try:
        return ui.context.client.ip
    except RuntimeError:  # no page or request in this context
        return ""


def current_user(ctx, *, touch: bool = True) -> SessionUser | None:
    """The signed-in user, re-checked against the database (a disabled user is signed out)."""
    storage = app.storage.user
    before = storage.get("auth")
    user = session_user(storage, ctx.session_timeout_s, touch=touch)
    if user is None and isinstance(before, dict) and "auth" not in storage and before.get("username") != DEMO_USER:
        ctx.auth.session_expired(str(before.get("username", "")), client_address())  # idle too long
    if user is None and ctx.config.demo_autologin:
        sign_in(storage, DEMO_USER, "operator")
        return SessionUser(DEMO_USER, "operator")
    if user is None or user.username == DEMO_USER:
        return user
    info = ctx.store.get_user(user.username)
    if info is None or info.disabled:
        sign_out(storage)
        return None
    if info.role != user.role:  # an admin changed the role: the new one applies now
        sign_in(storage, user.username, info.role)
        return SessionUser(user.username, info.role)
    return user


def sign_in_path(path: str) -> str:
    """The login page, asked to sign in another user (``switch``) and then to return to ``path``."""
    return f"/login?next={quote(path, safe='/')}&switch=1"


def guard(ctx, needed: str, path: str):
    """At the top of a page: the user, or a response to return instead of the page."""
    user = current_user(ctx)
    if user is None:
        return RedirectResponse(f"/login?next={quote(path, safe='/')}")
    if not allows(user.role, needed):
        frame(ctx, user, "Not allowed")
        with ui.column().classes("p-6 gap-4"):
            ui.label(f"This page needs the {needed} role; you are signed in as {user.username} ({user.role}).") \
                .classes("text-2xl text-red-300").mark("forbidden")
            # someone with the role is often at hand: let them sign in here and land on this page
            ui.link(f"Sign in as a user with the {needed} role", sign_in_path(path)) \
                .classes("text-2xl text-blue-300").mark("sign-in-link")
        return None
    return user


def frame(ctx, user: SessionUser | None, title: str) -> None:
    """Page header: station name, navigation for the user's role, user and sign-out."""
    ui.colors(primary=BLUE, positive=GREEN, negative=RED, warning=AMBER)
    ui.dark_mode(True)
    ui.page_title(f"{title} · {ctx.station.config.station_id}")
    ui.query("body").style("background:#0b0f14; color:#f3f4f6")
    # one line on a 1024 px panel with the admin's seven links: narrower gaps and text below 1280 px
    with ui.header().classes("items-center no-wrap gap-3 xl:gap-6 px-4 xl:px-6 py-2").style("background:#111827"):
        ui.label(ctx.station.config.station_id).classes("text-2xl font-bold")
        if user is not None:
            _online_badge(ctx)
        for path, label, role in NAV:
            if user is not None and allows(user.role, role):
                ui.link(label, path).classes("text-lg xl:text-xl text-white no-underline hover:underline").mark(f"nav-{label}")
        ui.space()
        if user is not None:
            ui.label(f"{user.username} ({user.role})").classes("text-lg").mark("whoami")
            ui.button("Sign out", on_click=lambda: _sign_out(ctx, user)).props("flat color=white").mark("signout")
    if user is not None and user.username != DEMO_USER:
        ui.timer(30.0, lambda: _check_session(ctx))


def _online_badge(ctx) -> None:
    """ONLINE / OFFLINE (and who holds it offline: an operator, the PLC) on every page, kept current."""
    online, text = ctx.state.online_label()
    shown = badge(text, GREEN if online else GREY, size="text-lg", mark="online-state")

    def refresh() -> None:
        online, text = ctx.state.online_label()
        if shown.text != text:
            shown.set_text(text)
            shown.style(f"background:{GREEN if online else GREY}")

    ui.timer(1.0, refresh)


def _check_session(ctx) -> None:
    # idle sessions end: checked without counting as activity
    if current_user(ctx, touch=False) is None:
        ui.navigate.to("/login")
        return
    # the session cookie lives as long as the idle timeout from the last HTTP response; a user
    # busy on one page talks over the websocket only, so the page renews the cookie itself
    ui.run_javascript(f"fetch('{KEEPALIVE_PATH}', {{credentials: 'same-origin', cache: 'no-store'}})")


def _sign_out(ctx, user: SessionUser) -> None:
    sign_out(app.storage.user)
    ctx.auth.logout(user.username, client_address())
    ui.navigate.to("/login")


def badge(text: str, colour: str, *, size: str = "text-xl", mark: str | None = None) -> ui.label:
    lab = ui.label(text).classes(f"{size} font-bold px-3 py-1 rounded").style(f"background:{colour}; color:white")
    if mark:
        lab.mark(mark)
    return lab
