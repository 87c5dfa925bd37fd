"""The review queue and SAM-assisted labelling.

``/review`` lists the parts with an archived image, newest first: REVIEW and REJECT verdicts
and the sampled passes (filters: verdict, label status, operators' flags). ``/review/{id}``
shows a part's stored view at full resolution (zoom, pan, the station's findings on or off).
A quality engineer confirms or overrides the verdict and corrects the defects: a box dragged
on the image comes back as the defect's outline from the SAM decoder (``hmi.labelling``: one
encoder run per image), its class is chosen, wrong findings deleted; the label is stored with
who, when and which models (``db.labels``, audited). Operators may flag a part for a quality
engineer. Database reads and SAM runs happen off the event loop (``run.io_bound``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from nicegui import events, run, ui

from station.db import rle
from station.db.labels import QUEUE_STATUSES, LabelError, LabelStore, Region
from station.db.queries import HistoryQueries
from station.hmi.auth import allows
from station.hmi.labelling import SamOutliner, normalise_box, segmentation_of, svg_path
from station.hmi.pages.history import check_comment, local_time
from station.hmi.pages.latest import LatestAnswer
from station.hmi.pages.layout import VERDICT_TEXT, badge, current_user, frame, guard, verdict_look
from station.recipe import Recipe, load_recipe

PAGE_SIZE = 25
ZOOMS = {"fit": "fit", "1": "100 %", "2": "200 %", "4": "400 %"}
VERDICT_FILTER = {"all": "review, reject, pass", "review": "REVIEW", "reject": "REJECT", "pass": "PASS (sample)"}
STATUS_FILTER = {"unlabelled": "to label", "flagged": "flagged by an operator", "labelled": "labelled", "all": "all"}
assert set(STATUS_FILTER) == set(QUEUE_STATUSES)
UNKNOWN_COLOUR = "#ff00ff"

# drag to pan the zoomed image while the pan mode is on (data-pan on the scroll box)
PAN_JS = """
(() => {
  const el = getHtmlElement(%d);
  if (!el || el.dataset.panReady) return;
  el.dataset.panReady = '1';
  let drag = null;
  el.addEventListener('pointerdown', e => {
    if (el.getAttribute('data-pan') !== '1') return;
    drag = {x: e.clientX, y: e.clientY, l: el.scrollLeft, t: el.scrollTop};
    e.preventDefault();
  });
  window.addEventListener('pointermove', e => {
    if (!drag) return;
    el.scrollLeft = drag.l - (e.clientX - drag.x);
    el.scrollTop = drag.t - (e.clientY - drag.y);
  });
  window.addEventListener('pointerup', () => { drag = null; });
})();
"""


def _recipe_of(ctx, name: str, content_hash: str) -> Recipe | None:
    """The recipe a part was inspected with (its stored version), else the recipe file of that name."""
    from sqlalchemy import select

    from station.db.models import RecipeVersionRow

    with ctx.store.session() as s:
        text = s.scalar(select(RecipeVersionRow.content).where(RecipeVersionRow.name == name,
                                                               RecipeVersionRow.content_hash == content_hash))
    try:
        if text is not None:
            return load_recipe(Path(f"{name}.toml"), text=text).recipe
    except Exception:  # a stored version this code cannot read any more: fall back to the file
        pass
    loaded = ctx.station.recipes.recipes.get(name)
    return loaded.recipe if loaded else None


def _read_view(path: Path) -> np.ndarray:
    """An archived PNG as the pipeline saw it: uint8 HxW (grey) or HxWx3 RGB."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise FileNotFoundError(f"archived image {path} is missing or unreadable")
    if data.ndim == 3:
        data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    return data


# ---- the queue -------------------------------------------------------------------------------
class ReviewQueue:
    def __init__(self, ctx, labels: LabelStore):
        self.ctx = ctx
        self.labels = labels
        self.offset = 0
        self.total = 0
        self.answers = LatestAnswer()  # a slower earlier query never replaces a later one's rows

    async def build(self) -> None:
        with ui.row().classes("w-full items-center gap-3 px-4"):
            self.verdict = ui.select(VERDICT_FILTER, value="all", label="Verdict", on_change=self.reload) \
                .props("outlined dark").classes("w-56").mark("q-verdict")
            self.status = ui.select(STATUS_FILTER, value="unlabelled", label="Label", on_change=self.reload) \
                .props("outlined dark").classes("w-64").mark("q-status")
            self.summary = ui.label("").classes("text-xl").mark("queue-summary")
        columns = [{"name": k, "label": label, "field": k, "align": "left"} for k, label in
                   (("time", "Time"), ("part", "Part"), ("recipe", "Recipe"), ("verdict", "Verdict"), ("reason", "Reason"),
                    ("label", "Label"))]
        self.table = ui.table(columns=columns, rows=[], row_key="id").classes("w-full text-lg px-4") \
            .props("dark flat hide-pagination :rows-per-page-options=[0]").mark("review-queue")
        self.table.add_slot("body-cell-verdict", r"""
            <q-td :props="props"><span :style="{background: props.row.colour, color: 'white', padding: '2px 8px',
              'border-radius': '4px', 'font-weight': 'bold'}">{{ props.value }}</span></q-td>""")
        self.table.on("rowClick", lambda e: ui.navigate.to(f"/review/{e.args[1]['id']}"))
        with ui.row().classes("items-center gap-4 px-4"):
            self.prev = ui.button("◀ Newer", on_click=lambda: self.goto(self.offset - PAGE_SIZE)).mark("q-prev")
            self.page = ui.label("").classes("text-lg")
            self.next = ui.button("Older ▶", on_click=lambda: self.goto(self.offset + PAGE_SIZE)).mark("q-next")
        await self.load()

    async def reload(self) -> None:
        self.offset = 0
        await self.load()

    async def goto(self, offset: int) -> None:
        self.offset = max(0, offset)
        await self.load()

    async def load(self) -> None:
        verdicts = ("review", "reject", "pass") if self.verdict.value == "all" else (self.verdict.value,)
        mine = self.answers.ticket()
        items, total = await run.io_bound(self.labels.queue, verdicts=verdicts, status=self.status.value,
                                          limit=PAGE_SIZE, offset=self.offset)
        if self.answers.stale(mine):  # the choice changed again while this one was queried
            return
        self.total = total
        rows = []
        for it in items:
            word, colour = verdict_look(it.outcome)
            if it.label is not None:
                what = "defective" if it.label.verdict == "reject" else "good"
                status = f"{what} ({it.label.reviewer})" + ("" if it.label.agrees else " · overrides")
            elif it.flagged_by:
                status = f"flagged by {it.flagged_by}"
            else:
                status = "—"
            rows.append({"id": it.inspection_id, "time": local_time(it.triggered_at, self.ctx.zone), "part": it.part_id,
                         "recipe": f"{it.recipe_name} v{it.recipe_version}", "verdict": word, "colour": colour,
                         "reason": it.reason, "label": status})
        self.table.rows = rows
        self.table.update()
        pages = max(1, -(-self.total // PAGE_SIZE))
        self.page.set_text(f"page {self.offset // PAGE_SIZE + 1} of {pages}")
        self.summary.set_text(f"{self.total} parts")
        self.prev.set_enabled(self.offset > 0)
        self.next.set_enabled(self.offset + PAGE_SIZE < self.total)


# ---- labelling one part ----------------------------------------------------------------------
@dataclass
class Draft:
    """A region on the page before it is saved."""

    view: str
    class_name: str
    box: tuple[int, int, int, int]
    mask: np.ndarray | None
    source: str
    iou: float | None = None
    path: str = field(default="", repr=False)  # SVG outline

    @property
    def area_px(self) -> int:
        if self.mask is not None:
            return int(self.mask.sum())
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


class LabelPage:
    def __init__(self, ctx, user, labels: LabelStore, outliner: SamOutliner, detail, recipe: Recipe | None, shapes: dict):
        self.ctx = ctx
        self.user = user
        self.labels = labels
        self.outliner = outliner
        self.detail = detail
        self.insp = detail.inspection
        self.recipe = recipe
        self.shapes = shapes  # view -> (H, W) of its archived raw image
        self.raw = {img["view"]: img for img in detail.images if img["kind"] == "raw"}
        self.view = next(iter(self.raw), None)
        self.classes = [c.name for c in recipe.classes] if recipe else sorted({d["class_name"] for d in detail.defects})
        self.colours = {c.name: c.colour for c in recipe.classes} if recipe else {}
        self.sam_name = segmentation_of(recipe)
        self.drafts: list[Draft] = []
        self.start: tuple[float, float] | None = None
        self.busy = False
        self.engineer = allows(user.role, "engineer")

    # -- layout
    def build(self, latest) -> None:
        i = self.insp
        word, colour = verdict_look(i["outcome"])
        with ui.column().classes("w-full gap-2 px-4"):
            ui.link("◀ Review queue", "/review").classes("text-lg")
            with ui.row().classes("items-center gap-4"):
                badge(word, colour, size="text-4xl", mark="label-verdict")
                ui.label(f"part {i['part_id']} · {local_time(i['triggered_at'], self.ctx.zone)} · {i['recipe_name']} v{i['recipe_version']}"
                         f" · station {i['station_id']}").classes("text-xl")
            ui.label(f"Reason: {i['reason']}").classes("text-xl").mark("label-reason")
            self.status = ui.label("").classes("text-xl").mark("label-status")
        if self.view is None:
            ui.label("No raw image of this part is archived (the recipe keeps rejects and a sample of passes): "
                     "it cannot be labelled.").classes("text-xl text-red-300 px-4").mark("no-image")
            return
        with ui.row().classes("w-full no-wrap gap-4 px-4 items-start"):
            with ui.column().classes("grow gap-2").style("min-width:0"):
                self._toolbar()
                self.scroll = ui.element("div").classes("w-full rounded").style(
                    "overflow:auto; max-height:72vh; background:#000").mark("image-box")
                with self.scroll:
                    self.image = ui.interactive_image(f"/hmi/archive/{self.raw[self.view]['id']}",
                                                      events=["mousedown", "mouseup"], cross="#22d3ee",
                                                      on_mouse=self._mouse).mark("label-image")
                ui.run_javascript(PAN_JS % self.scroll.id)
                self.hint = ui.label("").classes("text-lg text-gray-300").mark("label-hint")
            with ui.column().classes("w-[30rem] gap-2"):
                self._side_panel()
        self._set_zoom("fit")
        self._show_label(latest)
        self.render()

    def _toolbar(self) -> None:
        with ui.row().classes("items-center gap-3"):
            if len(self.raw) > 1:
                ui.select(list(self.raw), value=self.view, label="View", on_change=lambda e: self._set_view(e.value)) \
                    .props("outlined dark dense").classes("w-40").mark("label-view")
            self.zoom = ui.toggle(ZOOMS, value="fit", on_change=lambda e: self._set_zoom(e.value)).props("size=md") \
                .mark("label-zoom")
            self.mode = ui.toggle({"box": "draw box", "pan": "pan"}, value="box", on_change=lambda e: self._set_mode(e.value)) \
                .props("size=md").mark("label-mode")
            self.overlay = ui.switch("station's findings", value=True, on_change=lambda _: self.render()) \
                .classes("text-lg").mark("label-overlay")

    def _side_panel(self) -> None:
        ui.label("Defects (this label)").classes("text-2xl font-bold")
        self.region_box = ui.column().classes("w-full gap-1").mark("label-regions")
        if self.engineer:
            ui.button("Take the station's findings", on_click=self._take_findings).props("outline data-testid=take-findings") \
                .mark("take-findings")
            ui.label("The part is").classes("text-xl mt-2")
            self.truth = ui.radio({"reject": "defective (reject)", "pass": "good (pass)"}).props("dark") \
                .classes("text-lg").mark("label-truth")
            self.comment = ui.textarea("Comment", validation=lambda v: check_comment(v or "")) \
                .props("outlined dark").classes("w-full").mark("label-comment")
            ui.button("Save label", on_click=self.save).props("size=lg color=positive").mark("save-label")
        else:
            ui.label("Quality engineers label parts; you can flag this one for them.").classes("text-lg text-gray-300")
            self.comment = ui.textarea("What looks wrong?", validation=lambda v: check_comment(v or "")) \
                .props("outlined dark").classes("w-full").mark("flag-comment")
            ui.button("Flag for a quality engineer", on_click=self.flag).props("size=lg color=warning").mark("flag")
        ui.label("Station's findings").classes("text-xl font-bold mt-2")
        for d in self.detail.defects:
            ui.label(f"{d['class_name']} {d['confidence']:.2f} · {d['area_px']} px · ({d['x0']}, {d['y0']}, {d['x1']}, {d['y1']})"
                     f"{' · ' + d['view'] if len(self.raw) > 1 else ''}").classes("text-base")
        if not self.detail.defects:
            ui.label("none").classes("text-base text-gray-400")

    # -- view controls
    def _set_view(self, view: str) -> None:
        self.view = view
        self.image.set_source(f"/hmi/archive/{self.raw[view]['id']}")
        self._set_zoom(self.zoom.value)
        self.render()

    def _set_zoom(self, zoom: str) -> None:
        """"fit": the whole view in the box (its height at most 70 % of the window); else N x its pixels."""
        h, w = self.shapes[self.view]
        width = f"min(100%, {70 * w / h:.2f}vh)" if zoom == "fit" else f"{w * int(zoom)}px"
        self.image.style(replace=f"width:{width}; max-width:none")

    def _set_mode(self, mode: str) -> None:
        self.scroll._props["data-pan"] = "1" if mode == "pan" else "0"
        self.scroll.update()
        self.image._props["cross"] = "#22d3ee" if mode == "box" else False
        self.image.update()

    # -- drawing
    async def _mouse(self, e: events.MouseEventArguments) -> None:
        if self.mode.value != "box" or not self.engineer:
            return
        if e.type == "mousedown":
            self.start = (e.image_x, e.image_y)
            return
        if e.type != "mouseup" or self.start is None:
            return
        (x0, y0), self.start = self.start, None
        box = normalise_box(x0, y0, e.image_x, e.image_y, self.shapes[self.view])
        if box is None:
            self.hint.set_text("drag a box around the defect (a click is not enough"
                               + ("" if self._points_ok() else ": this SAM pair takes boxes only") + ")")
            return
        await self.outline(box)

    def _points_ok(self) -> bool:
        try:
            return self.outliner.takes_points(self.sam_name)
        except Exception:
            return False

    async def outline(self, box: tuple[int, int, int, int]) -> None:
        """Outline the defect in ``box`` (view px) with the SAM pair and add it as a region."""
        if self.busy:
            return
        self.busy = True
        self.hint.set_text(f"outlining with {self.sam_name} …")
        img = self.raw[self.view]
        try:
            image = await run.io_bound(_read_view, self.ctx.archive_dir / img["path"])
            out = await run.io_bound(self.outliner.outline, self.sam_name, str(img["id"]), image, box)
        except Exception as exc:  # a missing model or file: the person can still save a plain box
            self.drafts.append(Draft(self.view, self._default_class(), box, None, "box"))
            self.hint.set_text(f"no outline ({type(exc).__name__}: {exc}); the box itself is kept")
        else:
            mask = out.mask if out.mask.any() else None
            draft = Draft(self.view, self._default_class(), out.box, mask, "sam" if mask is not None else "box", out.iou)
            self.drafts.append(draft)
            self.hint.set_text(f"outlined by {self.sam_name}: {draft.area_px} px, predicted IoU {out.iou:.2f}"
                               + ("" if out.encoded_now else " (image encoding reused)"))
        finally:
            self.busy = False
        self.render()

    def _default_class(self) -> str:
        top = self.insp.get("top_class")
        return top if top in self.classes else (self.classes[0] if self.classes else "defect")

    def _take_findings(self) -> None:
        for d in self.detail.defects:
            shape = self.shapes.get(d["view"])
            if shape is None:
                continue
            box = (d["x0"], d["y0"], d["x1"], d["y1"])
            mask = rle.paste(d["mask_rle"], box, shape) if d["mask_rle"] else None
            self.drafts.append(Draft(d["view"], d["class_name"], box, mask, "station"))
        self.render()

    # -- rendering
    def render(self) -> None:
        parts = []
        if self.overlay.value:
            for d in self.detail.defects:
                if d["view"] != self.view:
                    continue
                colour = html.escape(self.colours.get(d["class_name"], UNKNOWN_COLOUR))
                x0, y0, x1, y1 = d["x0"], d["y0"], d["x1"], d["y1"]
                parts.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="{colour}" '
                             f'stroke-width="1.5" stroke-dasharray="4 3" vector-effect="non-scaling-stroke"/>')
                if d["mask_rle"]:
                    path = svg_path(rle.paste(d["mask_rle"], (x0, y0, x1, y1), self.shapes[self.view]))
                    parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1" stroke-dasharray="2 2" '
                                 'vector-effect="non-scaling-stroke"/>')
        for n, r in enumerate(self.drafts, 1):
            if r.view != self.view:
                continue
            colour = html.escape(self.colours.get(r.class_name, UNKNOWN_COLOUR))
            if r.mask is not None:
                r.path = r.path or svg_path(r.mask)
                parts.append(f'<path class="sam-outline" d="{r.path}" fill="{colour}" fill-opacity="0.35" stroke="{colour}" '
                             f'stroke-width="2" vector-effect="non-scaling-stroke"/>')
            else:
                x0, y0, x1, y1 = r.box
                parts.append(f'<rect class="box-region" x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="{colour}" '
                             f'fill-opacity="0.2" stroke="{colour}" stroke-width="2" vector-effect="non-scaling-stroke"/>')
            parts.append(f'<text x="{r.box[0]}" y="{max(10, r.box[1] - 3)}" fill="{colour}" font-size="12" '
                         f'font-weight="bold">{n}</text>')
        self.image.set_content("".join(parts))
        self._render_regions()

    def _render_regions(self) -> None:
        self.region_box.clear()
        with self.region_box:
            if not self.drafts:
                ui.label("none yet: drag a box around each defect" if self.engineer else "none").classes("text-lg text-gray-400")
            for n, r in enumerate(self.drafts, 1):
                with ui.row().classes("w-full items-center gap-2 p-1 rounded").style("background:#1f2937").mark(f"region-{n}"):
                    ui.label(f"{n}").classes("text-xl font-bold")
                    ui.select(self.classes, value=r.class_name if r.class_name in self.classes else None,
                              on_change=lambda e, reg=r: self._set_class(reg, e.value)) \
                        .props(f"outlined dark dense data-testid=region-{n}-class").classes("w-36").mark(f"region-{n}-class")
                    ui.label(f"{r.source} · {r.area_px} px" + (f" · IoU {r.iou:.2f}" if r.iou is not None else "")
                             + (f" · {r.view}" if len(self.raw) > 1 else "")).classes("text-base")
                    ui.space()
                    if self.engineer:
                        ui.button("Delete", on_click=lambda _, reg=r: self._delete(reg)) \
                            .props(f"flat color=negative dense data-testid=region-{n}-delete").mark(f"region-{n}-delete")

    def _set_class(self, region: Draft, name: str) -> None:
        region.class_name = name
        self.render()

    def _delete(self, region: Draft) -> None:
        self.drafts.remove(region)
        self.render()

    def _show_label(self, latest) -> None:
        if latest is None:
            self.status.set_text("Not labelled yet.")
            self.status.style(f"color:{VERDICT_TEXT['review']}")
            return
        what = "defective" if latest.verdict == "reject" else "good"
        agree = "confirms the verdict" if latest.agrees else f"overrides the station's {latest.station_outcome.upper()}"
        when = local_time(latest.at, self.ctx.zone)
        self.status.set_text(f"Labelled {what} by {latest.reviewer} at {when} ({len(latest.regions)} defects; "
                             f"{agree}{'; outlined with ' + latest.sam_model if latest.sam_model else ''})")
        self.status.style(f"color:{VERDICT_TEXT['pass']}")

    # -- saving
    async def save(self) -> None:
        who = current_user(self.ctx)
        if who is None or not allows(who.role, "engineer"):
            ui.navigate.to("/login")
            return
        if self.truth.value not in ("pass", "reject"):
            ui.notify("choose: is the part defective or good?", type="warning")
            return
        problem = check_comment(self.comment.value or "")
        if problem:
            self.comment.error = problem
            return
        missing = [n for n, r in enumerate(self.drafts, 1) if r.class_name not in self.classes]
        if missing:
            ui.notify(f"choose a class for defect {', '.join(map(str, missing))}", type="warning")
            return
        regions = [Region(r.view, r.class_name, r.box, r.mask, r.source) for r in self.drafts] if self.truth.value == "reject" else []
        if self.truth.value == "pass" and self.drafts:
            ui.notify("a good part has no defects: delete them, or label the part defective", type="warning")
            return
        sam = ""
        if any(r.source == "sam" for r in self.drafts):
            sam = await run.io_bound(self.outliner.describe, self.sam_name)
        try:
            saved = await run.io_bound(self.labels.save, self.insp["id"], self.truth.value, regions, who.username,
                                       comment=(self.comment.value or "").strip(), sam_model=sam)
        except LabelError as exc:
            ui.notify(f"not saved: {exc}", type="negative")
            return
        self._show_label(saved)
        ui.notify("label saved", type="positive")

    async def flag(self) -> None:
        who = current_user(self.ctx)
        if who is None:
            ui.navigate.to("/login")
            return
        problem = check_comment(self.comment.value or "")
        if problem:
            self.comment.error = problem
            return
        try:
            await run.io_bound(self.labels.flag, self.insp["id"], who.username, (self.comment.value or "").strip())
        except LabelError as exc:
            ui.notify(f"not flagged: {exc}", type="negative")
            return
        self.status.set_text(f"Flagged for a quality engineer by {who.username}.")
        ui.notify("flagged", type="positive")


def register(ctx) -> None:
    labels = LabelStore(ctx.engine)
    queries = HistoryQueries(ctx.engine)
    outliner = SamOutliner(Path(ctx.station.config.models_dir))
    ctx.outliner = outliner  # one cache of encoded images for every browser

    @ui.page("/review")
    async def queue_page():
        user = guard(ctx, "operator", "/review")
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, "Review")
        await ReviewQueue(ctx, labels).build()

    @ui.page("/review/{inspection_id}")
    async def label_page(inspection_id: int):
        user = guard(ctx, "operator", f"/review/{inspection_id}")
        if user is None or not hasattr(user, "role"):
            return user
        frame(ctx, user, f"Review part {inspection_id}")

        def load():
            detail = queries.inspection(inspection_id)
            if detail is None:
                return None, None, None, {}
            i = detail.inspection
            shapes = {}
            for img in detail.images:
                if img["kind"] == "raw":
                    try:
                        shapes[img["view"]] = _read_view(ctx.archive_dir / img["path"]).shape[:2]
                    except FileNotFoundError:
                        pass
            detail.images = [img for img in detail.images if img["kind"] != "raw" or img["view"] in shapes]
            return detail, _recipe_of(ctx, i["recipe_name"], i["recipe_hash"]), labels.latest(inspection_id), shapes

        detail, recipe, latest, shapes = await run.io_bound(load)
        if detail is None:
            ui.label(f"No inspection {inspection_id}.").classes("text-2xl text-red-300 px-4").mark("not-found")
            return
        LabelPage(ctx, user, labels, outliner, detail, recipe, shapes).build(latest)


__all__ = ["register", "ReviewQueue", "LabelPage"]
