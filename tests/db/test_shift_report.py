"""`station history --report`: a self-contained printable HTML report of a shift, a day or a
time range, from a real SQLite history with its image archive (the command in a subprocess);
the numbers checked against the database, the reject pictures against the archive."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import os
import re
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pytest
import simplejpeg
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from history_testkit import TOKYO_SHIFTS, history_file, make_inspection, station_file
from station.db.audit import AuditLog
from station.db.engine import make_engine
from station.db.models import DefectRow, ImageRow, InspectionRow
from station.images import read_image_file
from tests.report_page import Page

REPO = Path(__file__).resolve().parents[2]
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
DAY = dt.date(2026, 3, 10)
EARLY = (dt.datetime(2026, 3, 10, 6, tzinfo=BERLIN), dt.datetime(2026, 3, 10, 14, tzinfo=BERLIN))


@pytest.fixture
def history(tmp_path):
    start = EARLY[0].astimezone(dt.timezone.utc)
    # 40 parts in the early shift (one every 12 min), 10 in the late shift before it is over
    url = history_file(tmp_path, "report-st", (
        make_inspection(i, reject=i % 5 in (1, 2, 3), when=start + dt.timedelta(minutes=12 * i),
                        n_defects={1: 1, 2: 2, 3: 0}.get(i % 5, 0), classes=("scratch", "scratch", "crack", "stain"))
        for i in range(50)))
    archive = tmp_path / "img"
    engine = make_engine(url)
    AuditLog(engine).record("olga", "alarm.acknowledge", "camera_timeout")  # now: outside the shift
    with engine.begin() as conn:  # and one inside it, as the HMI would have written it then
        from station.db.models import AuditLogRow

        conn.execute(AuditLogRow.__table__.insert().values(at=EARLY[0] + dt.timedelta(hours=2), actor="olga",
                                                           action="alarm.acknowledge", target="plc_link"))
    engine.dispose()
    return url, archive


def station(*argv: str, tz: str = "Europe/Berlin") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")} | {"TZ": tz}
    return subprocess.run([sys.executable, "-m", "station.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_shift_report_numbers_images_and_nothing_from_outside(history, tmp_path):
    url, archive = history
    out = tmp_path / "early.html"
    done = station("history", "--db", url, "--archive", str(archive), "--report", str(out), "--shift", "early",
                   "--date", DAY.isoformat())
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    since, until = (t.astimezone(dt.timezone.utc) for t in EARLY)
    engine = make_engine(url)
    with Session(engine) as s:
        in_shift = (InspectionRow.triggered_at >= since, InspectionRow.triggered_at < until)
        counts = dict(s.execute(select(InspectionRow.outcome, func.count()).where(*in_shift)
                                .group_by(InspectionRow.outcome)).all())
        pareto = s.execute(select(DefectRow.class_name, func.count()).where(DefectRow.triggered_at >= since,
                                                                            DefectRow.triggered_at < until)
                           .group_by(DefectRow.class_name).order_by(func.count().desc(), DefectRow.class_name)).all()
        rejects = {r.id: r for r in s.scalars(select(InspectionRow).where(*in_shift, InspectionRow.outcome == "reject"))}
        images = {i.id: i for i in s.scalars(select(ImageRow))}
    engine.dispose()
    total = sum(counts.values())
    assert total == 40 and counts["reject"] == 24 and counts["pass"] == 16  # the late shift's 10 are left out
    assert page.ids["kpi-total"].split() == ["parts", "40"]
    assert page.ids["kpi-pass"].split() == ["pass", str(counts["pass"])]
    assert page.ids["kpi-reject"].split() == ["reject", str(counts["reject"])]
    assert page.ids["kpi-review"].split() == ["review", "0"]
    assert page.ids["kpi-yield"].split() == ["yield", f"{100 * counts['pass'] / total:.1f}", "%"]
    assert page.ids["title"] == "Shift report · early shift of 2026-03-10"
    assert "2026-03-10 06:00 – 2026-03-10 14:00 Europe/Berlin (UTC+01:00)" in page.ids["window"]
    assert [(r[0], int(r[1])) for r in page.rows["pareto"][1:]] == [(c, n) for c, n in pareto]
    hours = page.rows["hours"][1:]
    assert len(hours) == 8 and hours[0][0] == "2026-03-10 06:00" and sum(int(h[1]) for h in hours) == 40
    (recipe,) = page.rows["recipes"][1:]
    assert recipe[0] == "demo-part" and int(recipe[3]) == 40
    assert [r[1:] for r in page.rows["alarms"][1:]] == [["plc_link", "olga"]]
    # the top rejects: parts of the shift, rejects, each with its archived overlay embedded
    assert page.cards and set(page.cards) <= set(rejects)
    shown_classes = {rejects[i].top_class for i in page.cards}
    assert {c for c, _ in pareto} <= shown_classes | {None}
    assert any(rejects[i].defect_count == 0 for i in page.cards)  # a reject without defects (timeout) too
    assert page.external == []  # self-contained: nothing is loaded from anywhere
    with_pictures = [img for img in page.images if img.get("data-image-id")]
    assert len(with_pictures) == len(page.cards)
    for img in with_pictures:
        stored = images[int(img["data-image-id"])]
        assert stored.inspection_id == img["card"] and stored.kind == "overlay"
        jpeg = base64.b64decode(img["src"].removeprefix("data:image/jpeg;base64,"))
        thumb = simplejpeg.decode_jpeg(jpeg)
        original = read_image_file(archive / stored.path)
        assert max(thumb.shape[:2]) <= 320
        assert abs(float(thumb.mean()) - float(original.mean())) < 3  # the same picture, smaller
    print(f"report: {len(text) / 1024:.0f} KiB, {len(page.cards)} rejects shown")


def test_day_report_and_range_report(history, tmp_path):
    url, archive = history
    day = tmp_path / "day.html"
    assert station("history", "--db", url, "--archive", str(archive), "--report", str(day), "--date", "2026-03-10").returncode == 0
    assert Page(day.read_text()).ids["kpi-total"].split() == ["parts", "50"]
    rng = tmp_path / "range.html"
    done = station("history", "--db", url, "--archive", str(archive), "--report", str(rng),
                   "--since", "2026-03-10T07:00", "--until", "2026-03-10T08:00", "--verdict", "reject")
    assert done.returncode == 0, done.stderr
    page = Page(rng.read_text())
    assert page.ids["kpi-total"].split() == ["parts", "3"]  # parts 5..9 of the hour; kinds 1, 2, 3 reject
    assert "only verdict reject" in page.ids["window"]


def test_since_and_until_without_offset_are_the_stations_local_time(history, tmp_path):
    """On a machine kept in UTC, --since/--until without an offset are read in the station's
    zone (here --timezone), the zone the CSV then shows: parts 5..9 are 07:00-07:48 in Berlin."""
    url, _ = history
    out = tmp_path / "hour.csv"
    done = station("history", "--db", url, "--format", "csv", "--timezone", "Europe/Berlin", "-o", str(out),
                   "--since", "2026-03-10T07:00", "--until", "2026-03-10T08:00", tz="UTC")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"), newline="")))
    assert sorted(int(r["part_id"]) for r in rows) == [5, 6, 7, 8, 9]
    assert sorted(r["local_time"][11:16] for r in rows) == ["07:00", "07:12", "07:24", "07:36", "07:48"]


@pytest.mark.parametrize("argv,needle", [
    (["--shift", "noon"], "shift: unknown shift 'noon' (known: early, late, night)"),
    (["--date", "10.03.2026"], "date: '10.03.2026' is not a date"),
    (["--shift", "early", "--since", "2026-03-10T07:00"], "not both"),
])
def test_bad_report_choices_exit_2(history, tmp_path, argv, needle):
    url, archive = history
    out = tmp_path / "r.html"
    done = station("history", "--db", url, "--archive", str(archive), "--report", str(out), *argv)
    assert done.returncode == 2 and needle in done.stderr and not out.exists()


def test_a_missing_image_is_said_and_the_report_still_written(history, tmp_path):
    url, archive = history
    for png in archive.rglob("*.png"):
        png.write_bytes(png.read_bytes()[:100])  # cut short: a broken archive
    out = tmp_path / "r.html"
    done = station("history", "--db", url, "--archive", str(archive), "--report", str(out), "--shift", "early",
                   "--date", DAY.isoformat())
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "<img" not in text and re.search(r'class="missing">image .*(truncated|corrupt|cannot)', text)


def test_the_station_files_calendar_and_zone(history, tmp_path):
    """With --config, the shifts and the local times are the station file's [shifts]."""
    url, archive = history
    config = station_file(tmp_path / "station.toml", url, f'[archive]\ndir = "{archive}"\n' + TOKYO_SHIFTS)
    out = tmp_path / "swing.html"
    # the parts run 05:00-15:00 UTC on 2026-03-10 = 14:00-24:00 Tokyo: the day shift until 20:00 Tokyo (11:00 UTC)
    done = station("history", "--config", str(config), "--report", str(out), "--shift", "swing", "--date", DAY.isoformat())
    assert done.returncode == 0, done.stderr
    page = Page(out.read_text())
    since, until = dt.datetime(2026, 3, 10, 11, tzinfo=dt.timezone.utc), dt.datetime(2026, 3, 10, 23, tzinfo=dt.timezone.utc)
    engine = make_engine(url)
    with Session(engine) as s:
        n = s.scalar(select(func.count()).select_from(InspectionRow).where(InspectionRow.triggered_at >= since,
                                                                            InspectionRow.triggered_at < until))
    engine.dispose()
    assert n > 0 and page.ids["kpi-total"].split() == ["parts", str(n)]
    assert "2026-03-10 20:00 – 2026-03-11 08:00 Asia/Tokyo (UTC+09:00)" in page.ids["window"]
    assert page.images and all(i.get("data-image-id") for i in page.images)  # pictures from the station file's archive
    bad = station("history", "--config", str(config), "--report", str(tmp_path / "x.html"), "--shift", "early")
    assert bad.returncode == 2 and "unknown shift 'early' (known: day, swing)" in bad.stderr
