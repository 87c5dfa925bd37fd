"""Recipe editor (engineer): a form built from the recipe schema, validated before saving; each
save is a new version with author and diff in the audit log. Stored versions — saved here or
candidates trained by `station train --from-history` — are validated on the reviewed parts of
the history side by side with the active version (``station.recipe_validation``, off the event
loop) and activated after a confirmation that names what changes (audited). Putting a recipe
on the line asks too. Uploading a TOML file fills the form (never saves by itself)."""

from __future__ import annotations

import tomllib

from nicegui import events, run, ui

from station.hmi.pages.layout import AMBER, GREEN, GREY, badge, current_user, frame, guard
from station.hmi.pages.history import local_time
from station.hmi.recipe_form import ModelForm
from station.hmi.recipe_versions import MAX_RECIPE_BYTES, RecipeEditor, RecipeRefused, parse_text
from station.hmi.auth import allows
from station.hmi.store import StoreError
from station.config_errors import ConfigError
from station.recipe import Recipe, load_recipe
from station.recipe_validation import ValidationError, recipe_changes, table_rows, validate_candidate

CANDIDATE_AUTHOR = "station train"  # station.models.train.history_training


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
            ui.button("Run this recipe on the line", on_click=self.confirm_run_on_line).props("color=warning") \
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
        ui.label("Validation on reviewed parts").classes("text-2xl font-bold px-4 mt-4")
        self.validation_box = ui.column().classes("w-full gap-2 px-4").mark("validation")
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
                    ui.label(f"{v.author} · {local_time(v.created_at, self.ctx.zone)}").classes("text-base")
                    if active:
                        badge("ACTIVE", GREEN, size="text-base")
                    elif v.author == CANDIDATE_AUTHOR:
                        badge("CANDIDATE", AMBER, size="text-base")
                    if on_line:
                        badge("ON LINE", GREY, size="text-base")
                    ui.space()
                    if not active:
                        ui.button("Validate", on_click=lambda _, ver=v.version: self.validate(ver)) \
                            .props(f"outline data-testid=validate-{v.version}").mark(f"validate-{v.version}")
                        ui.button("Activate", on_click=lambda _, ver=v.version: self.confirm_activate(ver)) \
                            .props(f"data-testid=activate-{v.version}").mark(f"activate-{v.version}")
        self.show_validation()
        self.audit_box.clear()
        with self.audit_box:
            entries = [a for a in self.ctx.store.audit_log(200) if a.target.split(" ")[0] == self.name]
            if not entries:
                ui.label("no changes recorded").classes("text-lg text-gray-300")
            for a in entries[:30]:
                change = f" · {a.before} → {a.after.splitlines()[0]}" if a.before and a.after and a.action != "recipe.save" else ""
                when = local_time(a.at, self.ctx.zone)
                with ui.expansion(f"{when} · {a.actor} · {a.action} · {a.target}{change}").classes("w-full text-lg"):
                    ui.code(a.after or "", language="diff").classes("w-full")

    def show_validation(self, report: dict | None = None) -> None:
        """The latest validation of this recipe (or ``report``, just made) as a side-by-side table."""
        from station.db.recipe_versions import RecipeVersions

        if report is None:
            latest = RecipeVersions(self.ctx.engine).validations(self.name, 1)
            report = latest[0].report if latest else None
            when = f"{local_time(latest[0].at, self.ctx.zone)} by {latest[0].actor}" if latest else ""
        else:
            when = "just now"
        self.validation_box.clear()
        with self.validation_box:
            if report is None:
                ui.label("No version validated yet: press Validate next to a version (or run "
                         f"`station eval --recipe {self.name}@N --from-history`).").classes("text-lg text-gray-300")
                return
            active = report.get("active")
            ui.label(f"v{report['candidate']['version']} against the active "
                     f"{'v' + str(active['version']) if active else '(none)'} · {when} · {report['note']}") \
                .classes("text-lg").mark("validation-note")
            columns = [{"name": "what", "label": "", "field": "what", "align": "left"},
                       {"name": "active", "label": f"active v{active['version']}" if active else "active", "field": "active"},
                       {"name": "candidate", "label": f"candidate v{report['candidate']['version']}", "field": "candidate"}]
            rows = [{"id": n, "what": what, "active": a, "candidate": c} for n, (what, a, c) in enumerate(table_rows(report))]
            ui.table(columns=columns, rows=rows, row_key="id").props("dark flat dense hide-pagination :rows-per-page-options=[0]") \
                .classes("text-lg").style("max-width:56rem").mark("validation-table")
            for key in ("active", "candidate"):
                if report.get(key):
                    confusion = report[key]["confusion"]
                    ui.label(f"Confusion by class, {key} v{report[key]['version']} (labelled class → what its images became): "
                             + "; ".join(f"{truth} → " + ", ".join(f"{k} {n}" for k, n in sorted(became.items()))
                                         for truth, became in confusion.items())).classes("text-base").mark(f"confusion-{key}")
            ui.label("Activating it changes: " + "; ".join(report["changes"])).classes("text-base text-gray-300")

    async def validate(self, version: int) -> None:
        user = current_user(self.ctx)
        if user is None or not allows(user.role, "engineer"):
            ui.navigate.to("/login")
            return
        cfg = self.ctx.station.config
        note = ui.notification(f"validating {self.name} v{version} on the reviewed parts …", spinner=True, timeout=None)
        try:
            # one ONNX Runtime thread: the line inspects on the same cores while this runs
            report = await run.io_bound(
                validate_candidate, self.name, version, db_url=cfg.database.url, archive_dir=self.ctx.archive_dir,
                recipes_dir=self.editor.directory, models_dir=cfg.models_dir, actor=user.username, threads=1)
        except (ValidationError, ConfigError, StoreError) as exc:
            self.general_error.set_text(f"not validated: {exc}")
            return
        finally:
            note.dismiss()
        self.show_validation(report)
        ui.notify(f"{self.name} v{version} validated on {report['parts_judged']} reviewed parts", type="positive")

    def confirm_activate(self, version: int) -> None:
        """Ask before activating: name what changes, what the line will run, how it validated."""
        from station.db.recipe_versions import RecipeVersions

        stored = self.ctx.store.recipe_version(self.name, version)
        if stored is None:
            self.general_error.set_text(f"no stored version {version}")
            return
        disk = self.editor.on_disk(self.name)
        try:
            new = load_recipe(self.editor.directory / f"{self.name}.toml", text=stored.content).recipe
        except ConfigError as exc:
            self.general_error.set_text(f"v{version} cannot be activated: {exc}")
            return
        changes = recipe_changes(disk.recipe if disk else None, new)
        running = self.editor.running()
        validations = [v for v in RecipeVersions(self.ctx.engine).validations(self.name, 50)
                       if v.candidate_hash == stored.content_hash]
        with ui.dialog() as dialog, ui.card().classes("p-4 gap-2").style("background:#111827; min-width:40rem"):
            ui.label(f"Activate {self.name} v{version}?").classes("text-2xl font-bold")
            ui.label("It changes:").classes("text-lg")
            for line in changes:
                ui.label(f"• {line}").classes("text-lg").mark("activate-change")
            if running is not None and running.recipe.name == self.name:
                ui.label(f"The line runs {self.name} v{running.recipe.version}: it switches to v{version} from the next part.") \
                    .classes("text-lg text-amber-300")
            if validations:
                ui.label(f"Validated {local_time(validations[0].at, self.ctx.zone)}: {validations[0].report.get('summary', '')}") \
                    .classes("text-base")
            else:
                ui.label("Not validated on reviewed parts yet.").classes("text-lg text-red-300").mark("activate-unvalidated")
            with ui.row().classes("gap-3 mt-2"):
                ui.button("Cancel", on_click=dialog.close).props("outline").mark("cancel-activate")
                ui.button(f"Activate v{version}", on_click=lambda: self.activate(version, changes, dialog)) \
                    .props("color=warning").mark("confirm-activate")
        dialog.open()

    def activate(self, version: int, changes: list[str] | None = None, dialog=None) -> None:
        if dialog is not None:
            dialog.close()
        user = current_user(self.ctx)
        if user is None or not allows(user.role, "engineer"):
            ui.navigate.to("/login")
            return
        try:
            self.editor.activate(self.name, version, user.username, changes)
        except (RecipeRefused, StoreError, ConfigError, ValueError) as exc:
            self.general_error.set_text(f"not activated: {exc}")
            return
        ui.notify(f"{self.name} v{version} is now active", type="positive")
        self.show_versions()

    def confirm_run_on_line(self) -> None:
        running = self.editor.running()
        disk = self.editor.on_disk(self.name)
        with ui.dialog() as dialog, ui.card().classes("p-4 gap-2").style("background:#111827; min-width:36rem"):
            what = f"{self.name} v{disk.recipe.version}" if disk else self.name
            ui.label(f"Run {what} on the line?").classes("text-2xl font-bold")
            ui.label(f"The line runs {running.recipe.name} v{running.recipe.version} now; it switches from the next part."
                     if running else "No recipe runs now.").classes("text-lg")
            with ui.row().classes("gap-3 mt-2"):
                ui.button("Cancel", on_click=dialog.close).props("outline").mark("cancel-run")
                ui.button("Switch the line", on_click=lambda: (dialog.close(), self.run_on_line())).props("color=warning") \
                    .mark("confirm-run")
        dialog.open()

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
