"""Recipe editor (engineer): a form built from the recipe schema, validated before saving; each
save is a new version with author and diff in the audit log; activate a stored version; put a
recipe on the line. Uploading a TOML file fills the form (never saves by itself)."""

from __future__ import annotations

import tomllib

from nicegui import events, ui

from station.hmi.pages.layout import GREEN, GREY, badge, current_user, frame, guard
from station.hmi.pages.history import local_time
from station.hmi.recipe_form import ModelForm
from station.hmi.recipe_versions import MAX_RECIPE_BYTES, RecipeEditor, RecipeRefused, parse_text
from station.hmi.auth import allows
from station.hmi.store import StoreError
from station.config_errors import ConfigError
from station.recipe import Recipe


class RecipePage:
    def __init__(self, ctx, editor: RecipeEditor, name: str):
        self.ctx = ctx
        self.editor = editor
        self.name = name
        self.form: ModelForm | None = None
        self._build()

    def _build(self) -> None:
        names = self.editor.names()
        with ui.row().classes("w-full items-center gap-4 px-4"):
            ui.select(names, value=self.name, label="Recipe",
                      on_change=lambda e: ui.navigate.to(f"/recipes?name={e.value}")) \
                .props("outlined dark").classes("w-64 text-lg").mark("recipe-select")
            running = self.editor.running()
            ui.label(f"On the line: {running.recipe.name} v{running.recipe.version}" if running else "On the line: none") \
                .classes("text-xl").mark("running-recipe")
            ui.button("Run this recipe on the line", on_click=self.run_on_line).props("color=warning") \
                .mark("run-on-line")
        with ui.row().classes("w-full no-wrap gap-4 px-4 items-start"):
            with ui.column().classes("grow gap-2").style("min-width:0"):
                ui.label("Edit").classes("text-2xl font-bold")
                self.form_box = ui.column().classes("w-full")
                self.general_error = ui.label("").classes("text-xl text-red-300").mark("recipe-error")
                with ui.row().classes("gap-3 items-center"):
                    ui.button("Validate", on_click=self.check).props("size=lg outline").mark("validate")
                    ui.button("Save as new version", on_click=self.save).props("size=lg").mark("save-recipe")
                ui.label(f"Load a recipe file into the form (TOML, at most {MAX_RECIPE_BYTES // 1024} KiB)") \
                    .classes("text-lg mt-2")
                ui.upload(on_upload=self.uploaded, on_rejected=self.rejected, auto_upload=True,
                          max_file_size=MAX_RECIPE_BYTES).props("accept=.toml dark").mark("recipe-upload")
                self.upload_error = ui.label("").classes("text-lg text-red-300").mark("upload-error")
            with ui.column().classes("w-[30rem] gap-2"):
                ui.label("Versions").classes("text-2xl font-bold")
                self.versions_box = ui.column().classes("w-full gap-2").mark("versions")
        ui.label("Audit log").classes("text-2xl font-bold px-4 mt-4")
        self.audit_box = ui.column().classes("w-full gap-1 px-4").mark("audit")
        self.load_form(self._current_data())
        self.show_versions()

    def _current_data(self) -> dict:
        try:
            return tomllib.loads(self.editor.current_text(self.name))
        except (StoreError, tomllib.TOMLDecodeError):
            return {}

    def load_form(self, data: dict) -> None:
        self.form_box.clear()
        with self.form_box:
            self.form = ModelForm(Recipe, data)
        version = self.form.element("version")
        version.props("readonly hint='set when saved: the next version number'")
        self.general_error.set_text("")

    def _validated(self):
        self.form.clear_errors()
        self.general_error.set_text("")
        data, problems = self.form.collect()
        if problems:
            self._show(problems)
            return None
        return data

    def _show(self, problems) -> None:
        rest = self.form.show_errors(problems)
        self.general_error.set_text("; ".join(f"{k}: {m}" if k else m for k, m in rest) if rest else
                                    "Not saved: correct the fields marked in red.")

    def check(self) -> None:
        data = self._validated()
        if data is None:
            return
        try:
            from station.hmi.recipe_versions import validate

            validate(data)
        except RecipeRefused as exc:
            self._show(exc.problems)
            return
        ui.notify("the recipe is valid", type="positive")

    def save(self) -> None:
        user = current_user(self.ctx)
        if user is None or not allows(user.role, "engineer"):
            ui.navigate.to("/login")
            return
        data = self._validated()
        if data is None:
            return
        try:
            saved = self.editor.save(data, user.username)
        except RecipeRefused as exc:
            self._show(exc.problems)
            return
        except StoreError as exc:
            self.general_error.set_text(str(exc))
            return
        ui.notify(f"saved {saved.name} v{saved.version}", type="positive")
        if saved.name != self.name:
            ui.navigate.to(f"/recipes?name={saved.name}")
            return
        self.load_form(tomllib.loads(saved.content))
        self.show_versions()

    async def uploaded(self, e: events.UploadEventArguments) -> None:
        self.upload_error.set_text("")
        if e.file.size() > MAX_RECIPE_BYTES:
            self.upload_error.set_text(f"refused: {e.file.name} is larger than {MAX_RECIPE_BYTES // 1024} KiB")
            return
        try:
            text = (await e.file.read()).decode("utf-8")
            recipe = parse_text(text, e.file.name)
        except UnicodeDecodeError:
            self.upload_error.set_text(f"refused: {e.file.name} is not UTF-8 text")
            return
        except RecipeRefused as exc:
            self.upload_error.set_text(f"refused: {exc}")
            return
        self.load_form(recipe.model_dump(mode="json"))
        ui.notify(f"{e.file.name} loaded into the form: check it, then save", type="info")

    def rejected(self) -> None:
        self.upload_error.set_text(f"refused: the file is larger than {MAX_RECIPE_BYTES // 1024} KiB")

    def show_versions(self) -> None:
        disk = self.editor.on_disk(self.name)
        running = self.editor.running()
        self.versions_box.clear()
        with self.versions_box:
            versions = self.ctx.store.recipe_versions(self.name)
            if not versions:
                ui.label("no stored versions").classes("text-lg text-gray-300")
            for v in versions:
                active = disk is not None and disk.content_hash == v.content_hash
                on_line = running is not None and running.content_hash == v.content_hash
                with ui.row().classes("w-full items-center gap-2 p-2 rounded").style("background:#1f2937") \
                        .mark(f"version-{v.version}"):
                    ui.label(f"v{v.version}").classes("text-xl font-bold")
                    ui.label(f"{v.author} · {local_time(v.created_at)}").classes("text-base")
                    if active:
                        badge("ACTIVE", GREEN, size="text-base")
                    if on_line:
                        badge("ON LINE", GREY, size="text-base")
                    ui.space()
                    if not active:
                        ui.button("Activate", on_click=lambda _, ver=v.version: self.activate(ver)) \
                            .mark(f"activate-{v.version}")
        self.audit_box.clear()
        with self.audit_box:
            entries = [a for a in self.ctx.store.audit_log(200) if a.target.split(" ")[0] == self.name]
            if not entries:
                ui.label("no changes recorded").classes("text-lg text-gray-300")
            for a in entries[:30]:
                with ui.expansion(f"{local_time(a.at)} · {a.actor} · {a.action} · {a.target}"
                                  f"{' · ' + a.before + ' → ' + a.after if a.before and a.action != 'recipe.save' else ''}") \
                        .classes("w-full text-lg"):
                    ui.code(a.after or "", language="diff").classes("w-full")

    def activate(self, version: int) -> None:
        user = current_user(self.ctx)
        if user is None or not allows(user.role, "engineer"):
            ui.navigate.to("/login")
            return
        try:
            self.editor.activate(self.name, version, user.username)
        except (RecipeRefused, StoreError, ConfigError, ValueError) as exc:
            self.general_error.set_text(f"not activated: {exc}")
            return
        ui.notify(f"{self.name} v{version} is now active", type="positive")
        self.show_versions()

    def run_on_line(self) -> None:
        user = current_user(self.ctx)
        if user is None or not allows(user.role, "engineer"):
            ui.navigate.to("/login")
            return
        try:
            loaded = self.editor.run_on_line(self.name, user.username)
        except (KeyError, ValueError, ConfigError) as exc:
            self.general_error.set_text(f"not switched: {exc}")
            return
        ui.notify(f"{loaded.recipe.name} v{loaded.recipe.version} runs from the next part", type="positive")
        ui.navigate.to(f"/recipes?name={self.name}")


def register(ctx) -> None:
    editor = RecipeEditor(ctx.station, ctx.store)

    @ui.page("/recipes")
    def recipes_page(name: str = ""):
        user = guard(ctx, "engineer", "/recipes")
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, "Recipes")
        names = editor.names()
        if not names:
            ui.label("No recipes.").classes("text-2xl")
            return
        running = editor.running()
        if name not in names:
            name = running.recipe.name if running and running.recipe.name in names else names[0]
        RecipePage(ctx, editor, name)
