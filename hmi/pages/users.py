"""User administration (admin): list, create with a role, disable / enable, reset a password.
Every change is in the audit log; the last active admin cannot be disabled or demoted."""

from __future__ import annotations

from nicegui import ui

from station.hmi.auth import AuthError, allows, check_password, check_username, hash_password
from station.hmi.pages.history import local_time
from station.hmi.pages.layout import current_user, frame, guard
from station.hmi.store import ROLES, StoreError


class UsersPage:
    def __init__(self, ctx):
        self.ctx = ctx
        with ui.row().classes("w-full gap-6 px-4 items-start"):
            with ui.column().classes("grow gap-2"):
                ui.label("Users").classes("text-2xl font-bold")
                self.table_box = ui.column().classes("w-full gap-2").mark("user-list")
            with ui.card().classes("w-[26rem] gap-3").style("background:#111827"):
                ui.label("New user").classes("text-2xl font-bold")
                self.name_in = ui.input("User name").props("outlined dark").classes("w-full").mark("new-name")
                self.role_in = ui.select(list(ROLES), value="operator", label="Role").props("outlined dark") \
                    .classes("w-full").mark("new-role")
                self.pw_in = ui.input("Password", password=True).props("outlined dark").classes("w-full") \
                    .mark("new-password")
                ui.button("Create", on_click=self.create).props("size=lg").mark("create-user")
        self.show()

    def _admin(self):
        user = current_user(self.ctx)
        if user is None or not allows(user.role, "admin"):
            ui.navigate.to("/login")
            return None
        return user

    def show(self) -> None:
        self.table_box.clear()
        with self.table_box:
            for u in self.ctx.store.users():
                with ui.row().classes("w-full items-center gap-3 p-2 rounded").style("background:#1f2937") \
                        .mark(f"user-{u.username}"):
                    ui.label(u.username).classes("text-xl font-bold w-40")
                    ui.select(list(ROLES), value=u.role,
                              on_change=lambda e, name=u.username: self.set_role(name, e.value)) \
                        .props("outlined dark dense").classes("w-36").mark(f"role-{u.username}")
                    ui.label("DISABLED" if u.disabled else "active").classes("text-lg")
                    ui.label(f"last login {local_time(u.last_login_at, self.ctx.zone) or 'never'}").classes("text-base text-gray-300")
                    ui.space()
                    ui.button("Enable" if u.disabled else "Disable",
                              on_click=lambda _, name=u.username, d=not u.disabled: self.set_disabled(name, d)) \
                        .props("outline").mark(f"toggle-{u.username}")
                    pw = ui.input("New password", password=True).props("outlined dark dense").classes("w-48") \
                        .mark(f"pw-{u.username}")
                    ui.button("Set", on_click=lambda _, name=u.username, field=pw: self.set_password(name, field)) \
                        .props("outline").mark(f"setpw-{u.username}")

    def create(self) -> None:
        admin = self._admin()
        if admin is None:
            return
        for el in (self.name_in, self.pw_in):
            el.error = None
        try:
            name = check_username((self.name_in.value or "").lower())
        except AuthError as exc:
            self.name_in.error = str(exc)
            return
        try:
            check_password(self.pw_in.value or "", name)
        except AuthError as exc:
            self.pw_in.error = str(exc)
            return
        try:
            self.ctx.store.add_user(name, self.role_in.value, hash_password(self.pw_in.value), admin.username)
        except StoreError as exc:
            self.name_in.error = str(exc)
            return
        self.name_in.value = ""
        self.pw_in.value = ""
        ui.notify(f"user {name} created", type="positive")
        self.show()

    def _would_remove_last_admin(self, name: str) -> bool:
        info = self.ctx.store.get_user(name)
        return info is not None and info.role == "admin" and not info.disabled and self.ctx.store.count_admins() <= 1

    def set_role(self, name: str, role: str) -> None:
        admin = self._admin()
        if admin is None:
            return
        if role != "admin" and self._would_remove_last_admin(name):
            ui.notify("refused: this is the last active admin", type="negative")
            self.show()
            return
        self.ctx.store.update_user(name, admin.username, role=role)
        ui.notify(f"{name} is now {role}", type="positive")

    def set_disabled(self, name: str, disabled: bool) -> None:
        admin = self._admin()
        if admin is None:
            return
        if disabled and self._would_remove_last_admin(name):
            ui.notify("refused: this is the last active admin", type="negative")
            return
        self.ctx.store.update_user(name, admin.username, disabled=disabled)
        self.show()

    def set_password(self, name: str, field) -> None:
        admin = self._admin()
        if admin is None:
            return
        field.error = None
        try:
            self.ctx.auth.set_password(name, field.value or "", admin.username)
        except (AuthError, StoreError) as exc:
            field.error = str(exc)
            return
        field.value = ""
        ui.notify(f"password of {name} changed", type="positive")


def register(ctx) -> None:
    @ui.page("/users")
    def users_page():
        user = guard(ctx, "admin", "/users")
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, "Users")
        UsersPage(ctx)
