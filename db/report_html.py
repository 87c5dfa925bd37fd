"""A shift report (``db.shift_report``) as one self-contained HTML file for the printer.

Everything is inside the file: the style (A4, light paper, nothing cut between rows or
pictures), the bars (plain CSS widths) and the reject pictures (JPEG thumbnails of the archived
images as ``data:`` URIs), so it can be mailed, archived or printed from any browser. Every
text from the history is escaped. Times are the station's local time with the UTC offset.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

import numpy as np
import simplejpeg

from station.db.archive import archived_file
from station.db.shift_report import ShiftReport
from station.images import ImageError, read_image_file

THUMB_PX = 320  # longest side of a reject picture, px
VERDICT_COLOURS = {"pass": "#15803d", "reject": "#b91c1c", "review": "#b45309"}

STYLE = """
@page { size: A4; margin: 12mm; }
* { box-sizing: border-box; }
body { font: 11pt/1.35 "DejaVu Sans", Arial, sans-serif; color: #111; background: #fff; margin: 0 auto; max-width: 190mm; }
h1 { font-size: 18pt; margin: 0 0 2mm; }
h2 { font-size: 13pt; margin: 6mm 0 2mm; border-bottom: 1px solid #999; }
.meta { color: #444; font-size: 9.5pt; }
.kpis { display: flex; gap: 3mm; margin: 4mm 0; }
.kpi { flex: 1; border: 1px solid #bbb; border-radius: 2mm; padding: 2mm 3mm; }
.kpi b { display: block; font-size: 18pt; }
table { border-collapse: collapse; width: 100%; font-size: 9.5pt; }
th, td { border-bottom: 1px solid #ddd; padding: 1mm 2mm; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr, .reject { break-inside: avoid; page-break-inside: avoid; }
.bar { height: 3.5mm; background: #dc2626; print-color-adjust: exact; -webkit-print-color-adjust: exact; }
.bar.pass { background: #16a34a; }
.rejects { display: grid; grid-template-columns: repeat(3, 1fr); gap: 3mm; }
.reject { border: 1px solid #bbb; border-radius: 2mm; padding: 2mm; font-size: 8.5pt; }
.reject img { width: 100%; height: auto; display: block; background: #000; margin-bottom: 1mm; }
.missing { color: #b91c1c; font-style: italic; }
.verdict { color: #fff; padding: 0 1.5mm; border-radius: 1mm; font-weight: bold;
           print-color-adjust: exact; -webkit-print-color-adjust: exact; }
.none { color: #555; font-style: italic; }
@media print { .no-print { display: none; } }
@media screen { body { padding: 8mm; } }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _t(t: dt.datetime | None, zone: dt.tzinfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return t.astimezone(zone).strftime(fmt) if t else ""


def _offset(t: dt.datetime, zone: dt.tzinfo) -> str:
    z = t.astimezone(zone).strftime("%z")  # +0100
    return f"UTC{z[:3]}:{z[3:]}"


def thumbnail(path: Path, px: int = THUMB_PX) -> str:
    """A ``data:image/jpeg`` URI of the image at ``path``, longest side ``px``. ImageError if unreadable."""
    image = read_image_file(path)
    h, w = image.shape[:2]
    scale = min(1.0, px / max(h, w))
    if scale < 1.0:
        import cv2

        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    image = np.ascontiguousarray(image)
    if image.ndim == 2:
        data = simplejpeg.encode_jpeg(image[:, :, None], quality=85, colorspace="GRAY")
    else:
        data = simplejpeg.encode_jpeg(image, quality=85, colorspace="RGB")
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _picture(images: list[dict], archive_dir: Path | None) -> str:
    """The overlay of the first view (else its raw image) as an embedded thumbnail, or why not."""
    if not images:
        return '<div class="missing">no image archived</div>'
    if archive_dir is None:
        return '<div class="missing">image archive not given</div>'
    pick = sorted(images, key=lambda i: (i["kind"] != "overlay", i["id"]))[0]
    path = archived_file(archive_dir, pick["path"])
    if path is None:
        return '<div class="missing">image path outside the archive</div>'
    try:
        uri = thumbnail(path)
    except ImageError as exc:
        return f'<div class="missing">{_e(exc)}</div>'
    return f'<img src="{uri}" alt="{_e(pick["view"])} {_e(pick["kind"])}" data-image-id="{pick["id"]}">'


def render_html(r: ShiftReport, archive_dir: Path | None) -> str:
    """The report as a complete HTML document (text)."""
    z = r.zone
    zone_name = getattr(z, "key", str(z))
    out: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(r.title)}</title><style>{STYLE}</style></head><body>",
        '<p class="no-print"><button onclick="window.print()">Print</button></p>',
        f'<h1 id="title">{_e(r.title)}</h1>',
        f'<div class="meta" id="window">{_t(r.since, z, "%Y-%m-%d %H:%M")} – {_t(r.until, z, "%Y-%m-%d %H:%M")} '
        f"{_e(zone_name)} ({_offset(r.since, z)}) · station {_e(', '.join(r.stations) or '—')}"
        f"{_filters(r)} · printed {_t(r.generated_at, z, '%Y-%m-%d %H:%M')}</div>",
        '<div class="kpis">',
        _kpi("parts", r.total, "total"), _kpi("pass", r.passed, "pass"), _kpi("reject", r.rejected, "reject"),
        _kpi("review", r.reviewed, "review"), _kpi("yield", f"{r.yield_pct:.1f} %", "yield"),
        "</div>",
    ]
    if not r.total:
        out.append('<p class="none" id="no-parts">No inspections in this time range.</p>')
    out += ["<h2>Verdicts and reasons</h2>", _table("reasons", ["verdict", "reason", "#parts", "#share"], [
        [f'<span class="verdict" style="background:{VERDICT_COLOURS.get(outcome, "#555")}">{_e(outcome.upper())}</span>',
         _e(reason or ""), n, f"{100 * n / r.total:.1f} %"] for outcome, reason, n in r.reasons])]

    out += ["<h2>Defect Pareto</h2>"]
    if r.pareto:
        top = r.pareto[0].count
        out.append(_table("pareto", ["class", "#defects", "#share", "#cumulative", ""], [
            [_e(p.class_name), p.count, f"{100 * p.share:.1f} %", f"{100 * p.cumulative:.1f} %",
             f'<div class="bar" style="width:{100 * p.count / top:.1f}%"></div>'] for p in r.pareto]))
    else:
        out.append('<p class="none">No defects found.</p>')

    out += ["<h2>Yield per hour</h2>"]
    if r.hours:
        out.append(_table("hours", ["hour", "#parts", "#pass", "#reject", "#review", "#yield", ""], [
            [b.local_start(z), b.total, b.passed, b.rejected, b.reviewed, f"{b.yield_pct:.1f} %",
             f'<div class="bar pass" style="width:{b.yield_pct:.1f}%"></div>'] for b in r.hours]))

    out += ["<h2>Recipe versions in use</h2>", _table(
        "recipes", ["recipe", "#version", "content hash", "#parts", "first part", "last part"],
        [[_e(v["recipe_name"]), v["recipe_version"], f"<code>{_e((v['recipe_hash'] or '')[:12])}</code>", v["parts"],
          _t(v["first"], z), _t(v["last"], z)] for v in r.recipes])]

    out += ["<h2>Top rejects</h2>"]
    if r.rejects:
        out.append('<div class="rejects" id="rejects">')
        for s in r.rejects:
            i = s.inspection
            out.append(f'<div class="reject" data-inspection="{i["id"]}">{_picture(s.images, archive_dir)}'
                       f"<b>part {_e(i['part_id'])}</b> · {_t(i['triggered_at'], z)}<br>"
                       f"{_e(s.defect_class or i['reject_reason'] or '')}: {_e(i['reason'])}</div>")
        out.append("</div>")
    else:
        out.append('<p class="none">No rejects.</p>')

    out += ["<h2>Alarms acknowledged</h2>",
            '<p class="meta">The history does not store alarms; these are the acknowledgements on the HMI (audit log).</p>']
    if r.alarms:
        out.append(_table("alarms", ["time", "alarm", "acknowledged by"],
                          [[_t(a["at"], z), _e(a["target"]), _e(a["actor"])] for a in r.alarms]))
    else:
        out.append('<p class="none">None.</p>')
    out.append("</body></html>")
    return "\n".join(out)


def _table(table_id: str, head: list[str], rows: list[list]) -> str:
    """A table of ready HTML cells; a heading starting with "#" marks a right-aligned number column."""
    numeric = [h.startswith("#") for h in head]
    cls = ['' if not n else ' class="n"' for n in numeric]
    lines = [f'<table id="{table_id}"><tr>' + "".join(f"<th{c}>{h.lstrip('#')}</th>" for c, h in zip(cls, head)) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td{c}>{cell}</td>" for c, cell in zip(cls, row)) + "</tr>" for row in rows]
    return "\n".join(lines) + "</table>"


def _kpi(label: str, value, key: str) -> str:
    return f'<div class="kpi" id="kpi-{key}">{_e(label)} <b>{_e(value)}</b></div>'


def _filters(r: ShiftReport) -> str:
    f = r.filter
    parts = [f"{k} {v}" for k, v in (("recipe", f.recipe), ("verdict", f.verdict), ("class", f.defect_class),
                                     ("part", f.part_id)) if v is not None]
    return (" · only " + ", ".join(_e(p) for p in parts)) if parts else ""
