"""Quality engineer's history: filtered table with paging, CSV export, and a detail page per
inspection (all views and overlays, defect list, reviews, review form).

The filter can come in the address (``/history?defect_class=crack&since=…&until=…``, the
``HistoryFilter`` fields, times ISO 8601 with offset): the charts drill down to the parts behind
a bar that way, and such a link can be bookmarked or sent."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlencode

from fastapi import Response
from fastapi.responses import FileResponse
from nicegui import app, run, ui

from station.db.archive import archived_file
from station.db.filters import FilterError, HistoryFilter
from station.db.localtime import local_text
from station.db.queries import HistoryQueries
from station.hmi.auth import allows, session_user
from station.hmi.history_export import history_csv, latest_reviews
from station.hmi.pages.latest import LatestAnswer
from station.hmi.pages.layout import badge, current_user, frame, guard, verdict_look
from station.hmi.store import REVIEW_LABELS, StoreError

PAGE_SIZE = 50
MAX_COMMENT = 1000
# Comments are shown as text (never HTML) but also refused when they carry markup or control
# characters: they are exported to CSV and read by other tools.
COMMENT_FORBIDDEN = re.compile(r"[<>\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_comment(text: str) -> str | None:
    """The reason a review comment is refused, or None."""
    if len(text) > MAX_COMMENT:
        return f"at most {MAX_COMMENT} characters (got {len(text)})"
    if COMMENT_FORBIDDEN.search(text):
        return "no markup or control characters ('<', '>' are not allowed)"
    return None


def local_time(t: dt.datetime | None, zone: dt.tzinfo) -> str:
    """A stored (UTC) time as the page shows it: local time in the station's zone (``ctx.zone``)."""
    return local_text(t, zone)


class HistoryView:
    """The history table. Every query runs off the web server's event loop (``run.io_bound``):
    a slow query must not freeze the other browsers' live views."""

    FIELDS = ("since", "until", "recipe", "verdict", "defect_class", "part_id")

    def __init__(self, ctx, queries: HistoryQueries):
        self.ctx = ctx
        self.q = queries
        self.filter = HistoryFilter()
        self.offset = 0
        self.total = 0
        self.answers = LatestAnswer()  # a slower earlier query never replaces a later one's rows

    @classmethod
    async def build(cls, ctx, queries: HistoryQueries, start: dict[str, str] | None = None) -> "HistoryView":
        """The table; ``start`` is a filter from the address (HistoryFilter fields as text)."""
        view = cls(ctx, queries)
        recipes, classes = await run.io_bound(lambda: (queries.recipes(), queries.defect_classes()))
        view._build(recipes, classes)
        if start:
            view._fill(start)
            await view.apply()
        else:
            await view.load()
        return view

    def _fill(self, start: dict[str, str]) -> None:
        """Show the address's filter in the fields; times in the station's local time (as the page
        shows them and ``HistoryFilter.parse`` reads a time without offset), to the second."""
        for key, text in start.items():
            if key in ("since", "until"):
                try:
                    t = dt.datetime.fromisoformat(text)
                except ValueError:
                    pass  # left as given: apply() names the field and what is wrong
                else:
                    text = (t.astimezone(self.ctx.zone) if t.tzinfo else t).strftime("%Y-%m-%dT%H:%M:%S")
            field = self.inputs[key]
            if isinstance(field, ui.select) and text not in field.options:
                field.set_options(field.options | {text: text})  # unknown: apply() says so on the field
            field.value = text

    def _build(self, recipes: list[str], classes: list[str]) -> None:
        any_ = {"": "any"}
        with ui.row().classes("w-full items-start gap-3 px-4"):
            self.inputs = {
                "since": ui.input("From (local)").props("type=datetime-local step=1 stack-label outlined dark").mark("f-since"),
                "until": ui.input("Until (local)").props("type=datetime-local step=1 stack-label outlined dark").mark("f-until"),
                "recipe": ui.select(any_ | {r: r for r in recipes}, value="", label="Recipe")
                .props("outlined dark").classes("w-48").mark("f-recipe"),
                "verdict": ui.select(any_ | {"pass": "PASS", "reject": "REJECT", "review": "REVIEW"}, value="", label="Verdict")
                .props("outlined dark").classes("w-36").mark("f-verdict"),
                "defect_class": ui.select(any_ | {c: c for c in classes}, value="", label="Defect class")
                .props("outlined dark").classes("w-44").mark("f-class"),
                "part_id": ui.input("Part ID").props("outlined dark").classes("w-36").mark("f-part"),
            }
            ui.button("Apply", on_click=self.apply).props("size=lg").mark("apply")
            with ui.column().classes("gap-0"):
                ui.button("Export CSV", on_click=self.export).props("size=lg color=secondary").mark("export")
                self.per_defect = ui.checkbox("one row per defect").props("dark").mark("export-per-defect")
        self.summary = ui.label("").classes("text-xl px-4").mark("history-summary")
        columns = [
            {"name": "time", "label": "Time", "field": "time", "align": "left"},
            {"name": "part", "label": "Part", "field": "part", "align": "left"},
            {"name": "recipe", "label": "Recipe", "field": "recipe", "align": "left"},
            {"name": "verdict", "label": "Verdict", "field": "verdict", "align": "left"},
            {"name": "reason", "label": "Reason", "field": "reason", "align": "left"},
            {"name": "defects", "label": "Defects", "field": "defects"},
            {"name": "review", "label": "Review", "field": "review", "align": "left"},
        ]
        self.table = ui.table(columns=columns, rows=[], row_key="id").classes("w-full text-lg px-4").props(
            "dark flat hide-pagination :rows-per-page-options=[0]").mark("history-table")
        self.table.add_slot("body-cell-verdict", r"""
            <q-td :props="props"><span :style="{background: props.row.colour,
              color: 'white', padding: '2px 8px', 'border-radius': '4px', 'font-weight': 'bold'}">{{ props.value }}</span></q-td>""")
        self.table.on("rowClick", lambda e: ui.navigate.to(f"/inspection/{e.args[1]['id']}"))
        with ui.row().classes("items-center gap-4 px-4"):
            self.prev = ui.button("◀ Newer", on_click=lambda: self.goto(self.offset - PAGE_SIZE)).mark("prev")
            self.page_label = ui.label("").classes("text-lg").mark("page")
            self.next = ui.button("Older ▶", on_click=lambda: self.goto(self.offset + PAGE_SIZE)).mark("next")

    def _raw(self) -> dict[str, str]:
        return {k: (self.inputs[k].value or "").strip() for k in self.FIELDS}

    async def apply(self) -> None:
        for el in self.inputs.values():
            el.error = None
        try:
            flt = HistoryFilter.parse(self.ctx.zone, **self._raw())
            self.q.check(flt)
        except FilterError as exc:
            field = exc.field if exc.field in self.inputs else "since"
            self.inputs[field].error = exc.message
            return
        self.filter = flt
        self.offset = 0
        await self.load()

    async def goto(self, offset: int) -> None:
        self.offset = max(0, offset)
        await self.load()

    def _fetch(self, flt: HistoryFilter, offset: int):
        page = self.q.page(flt, limit=PAGE_SIZE, offset=offset, check=False)
        return page, self.q.count(flt, check=False), latest_reviews(self.q, [r["id"] for r in page.items])

    async def load(self) -> None:
        mine = self.answers.ticket()
        page, total, reviews = await run.io_bound(self._fetch, self.filter, self.offset)
        if self.answers.stale(mine):  # the filter or page changed again while this one was queried
            return
        self.total = total
        self.table.rows = [
            {
                "id": r["id"],
                "time": local_time(r["triggered_at"], self.ctx.zone),
                "part": r["part_id"],
                "recipe": f"{r['recipe_name']} v{r['recipe_version']}",
                "verdict": verdict_look(r["outcome"])[0],
                "colour": verdict_look(r["outcome"])[1],
                "reason": r["reason"],
                "defects": r["defect_count"],
                "review": reviews.get(r["id"], {}).get("review_label", ""),
            }
            for r in page.items
        ]
        self.table.update()
        pages = max(1, -(-self.total // PAGE_SIZE))
        self.page_label.set_text(f"page {self.offset // PAGE_SIZE + 1} of {pages}")
        self.summary.set_text(f"{self.total} inspections match")
        self.prev.set_enabled(self.offset > 0)
        self.next.set_enabled(page.has_more)

    async def export(self) -> None:
        zone = self.ctx.zone
        decimal = self.ctx.station.config.export.decimal_separator
        data, n = await run.io_bound(lambda: history_csv(self.q, self.filter, zone, per_defect=bool(self.per_defect.value),
                                                         decimal=decimal))
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        ui.download.content(data, f"history-{stamp}.csv", "text/csv")
        ui.notify(f"exported {n} inspections")


def register(ctx) -> None:
    queries = HistoryQueries(ctx.engine)

    @app.get("/hmi/archive/{image_id}")
    def archived_image(image_id: int) -> Response:
        # operators see archived parts on the review page (to flag them), as they see live ones
        user = session_user(app.storage.user, ctx.session_timeout_s, touch=False)
        if user is None or not allows(user.role, "operator"):
            return Response(status_code=401)
        from station.db.models import ImageRow

        with ctx.store.session() as s:
            row = s.get(ImageRow, image_id)
            rel = row.path if row else None
        if rel is None:
            return Response(status_code=404)
        path = archived_file(ctx.archive_dir, rel)
        if path is None or not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, media_type="image/png")

    @ui.page("/history")
    async def history_page(since: str = "", until: str = "", recipe: str = "", verdict: str = "",
                           defect_class: str = "", part_id: str = ""):
        start = {k: v for k, v in (("since", since), ("until", until), ("recipe", recipe), ("verdict", verdict),
                                   ("defect_class", defect_class), ("part_id", part_id)) if v}
        user = guard(ctx, "engineer", "/history" + (f"?{urlencode(start)}" if start else ""))
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, "History")
        await HistoryView.build(ctx, queries, start)

    @ui.page("/inspection/{inspection_id}")
    async def detail_page(inspection_id: int):
        user = guard(ctx, "engineer", f"/inspection/{inspection_id}")
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, f"Inspection {inspection_id}")
        detail = await run.io_bound(queries.inspection, inspection_id)
        if detail is None:
            ui.label(f"No inspection {inspection_id}.").classes("text-2xl text-red-300").mark("not-found")
            return
        _detail(ctx, user, detail)


def _detail(ctx, user, detail) -> None:
    i = detail.inspection
    word, colour = verdict_look(i["outcome"])
    with ui.column().classes("w-full gap-3 px-4"):
        with ui.row().classes("gap-6"):
            ui.link("◀ History", "/history").classes("text-lg")
            ui.link("Label this part ▶", f"/review/{i['id']}").classes("text-lg").mark("detail-label-link")
        with ui.row().classes("items-center gap-4"):
            badge(word, colour, size="text-4xl", mark="detail-verdict")
            ui.label(f"part {i['part_id']} · seq {i['sequence']} · {local_time(i['triggered_at'], ctx.zone)} · "
                     f"{i['recipe_name']} v{i['recipe_version']} · station {i['station_id']}").classes("text-xl")
        ui.label(f"Reason: {i['reason']}").classes("text-xl").mark("detail-reason")
        timings = ", ".join(f"{k} {v:.1f} ms" for k, v in (i["timings_ms"] or {}).items())
        ui.label(f"Timings: {timings}").classes("text-base text-gray-300")
        ui.label("Views").classes("text-2xl font-bold mt-2")
        with ui.row().classes("gap-4"):
            if not detail.images:
                ui.label("No image archived for this part (the recipe keeps rejects and a sample of passes).") \
                    .classes("text-lg text-gray-300").mark("no-images")
            for img in detail.images:
                with ui.column().classes("gap-1"):
                    ui.label(f"{img['view']} · {img['kind']}").classes("text-lg")
                    ui.element("img").props(f"src=/hmi/archive/{img['id']}").style(
                        "max-width:46vw; max-height:60vh; object-fit:contain; background:#000").mark(f"image-{img['id']}")
        ui.label(f"Defects ({len(detail.defects)})").classes("text-2xl font-bold mt-2")
        ui.table(columns=[{"name": k, "label": k, "field": k, "align": "left"}
                          for k in ("view", "class_name", "confidence", "box", "area_px", "area_mm2", "zone")],
                 rows=[{**{k: d[k] for k in ("id", "view", "class_name", "area_px", "area_mm2", "zone")},
                        "confidence": f"{d['confidence']:.3f}", "box": f"({d['x0']}, {d['y0']}, {d['x1']}, {d['y1']})"}
                       for d in detail.defects], row_key="id").props("dark flat").classes("text-lg").mark("defects")
        ui.label("Reviews").classes("text-2xl font-bold mt-2")
        reviews_box = ui.column().classes("gap-1").mark("reviews")

        def show_reviews(rows) -> None:
            reviews_box.clear()
            with reviews_box:
                if not rows:
                    ui.label("not reviewed yet").classes("text-lg text-gray-300")
                for r in rows:
                    ui.label(f"{local_time(r['at'], ctx.zone)} · {r['reviewer']}: {r['label'].upper()}"
                             f"{' — ' + r['comment'] if r['comment'] else ''}").classes("text-lg")

        show_reviews(detail.reviews)
        with ui.row().classes("items-start gap-3"):
            label_in = ui.radio({"confirmed": "Verdict confirmed", "wrong": "Verdict wrong"}).props("inline dark") \
                .classes("text-lg").mark("review-label")
            comment_in = ui.textarea("Comment", validation=lambda v: check_comment(v or "")).props(
                f"outlined dark counter maxlength={MAX_COMMENT * 2}").classes("w-[32rem]").mark("review-comment")

            def save_review() -> None:
                who = current_user(ctx)
                if who is None or not allows(who.role, "engineer"):
                    ui.navigate.to("/login")
                    return
                comment = comment_in.value or ""
                problem = check_comment(comment)
                if problem:
                    comment_in.error = problem
                    return
                if label_in.value not in REVIEW_LABELS:
                    ui.notify("choose confirmed or wrong", type="warning")
                    return
                try:
                    ctx.store.add_review(i["id"], label_in.value, comment.strip(), who.username)
                except StoreError as exc:
                    comment_in.error = str(exc)
                    return
                show_reviews(HistoryQueries(ctx.engine).inspection(i["id"]).reviews)
                comment_in.value = ""
                ui.notify("review saved", type="positive")

            ui.button("Save review", on_click=save_review).props("size=lg").mark("save-review")
