"""History benchmark (`station db bench`): sustained writes and query latencies.

1. Inserts: inspections with three defects each (masks in a 640x480 frame, RLE-encoded by the
   writer), published into a real HistoryWriter as fast as it takes them; reports inspections/s
   from first publish to the last commit, and the time ``publish()`` takes (the pipeline's cost).
   No images: archive PNG encoding is reported separately (per image).
2. Queries: a database of ``rows`` inspections over 30 days (6 % rejects with 1-3 defects,
   skewed classes, 3 recipes) generated with bulk inserts, reused if already there; then the
   HMI's common queries, each run ``repeat`` times: median and p99 in ms.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np
from sqlalchemy import func, insert, select

from station.benchmarks.recipes import threshold_recipe
from station.db.engine import make_engine
from station.db.filters import HistoryFilter
from station.db.migrate import upgrade
from station.db.models import DefectRow, InspectionRow
from station.db.queries import HistoryQueries, ShiftPlan

CLASSES = ["scratch", "crack", "stain", "dent", "burr"]
CLASS_WEIGHTS = [50, 25, 15, 8, 2]
RECIPES = ["plate-a", "plate-b", "cover-c"]


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def bench_inserts(url: str, n: int, out: IO[str], archive_dir: Path) -> dict:
    from station.alarms import AlarmBoard
    from station.config import ArchiveConfig, DatabaseConfig
    from station.inspection import Defect, Inspection, Outcome, RejectReason, Verdict

    from station.db.writer import HistoryWriter

    rng = np.random.default_rng(1)
    recipe = threshold_recipe(RECIPES[0], CLASSES)
    prototypes = []
    for _ in range(64):
        defects = []
        for j in range(3):
            x0, y0 = int(rng.integers(0, 600)), int(rng.integers(0, 440))
            w, h = int(rng.integers(8, 40)), int(rng.integers(8, 40))
            mask = np.zeros((480, 640), bool)
            yy, xx = np.ogrid[:h, :w]
            mask[y0:y0 + h, x0:x0 + w] = ((yy - h / 2) ** 2 / (h / 2) ** 2 + (xx - w / 2) ** 2 / (w / 2) ** 2) <= 1
            box = (x0, y0, min(640, x0 + w), min(480, y0 + h))
            defects.append(Defect("top", CLASSES[j], 0.9, box, int(mask.sum()), mask, float(mask.sum()) * 0.01, 0.7, "plate"))
        prototypes.append(defects)
    writer = HistoryWriter(DatabaseConfig(url=url, queue_size=max(n, 1), batch_size=200), ArchiveConfig(dir=archive_dir),
                           AlarmBoard(), "bench", maintenance_interval_s=1e9)
    writer.start()
    publish_us = []
    now = time.time()
    t0 = time.perf_counter()
    for i in range(n):
        defects = prototypes[i % len(prototypes)]
        insp = Inspection(i, i, recipe, now + i * 0.001, 0.0, defects=list(defects),
                          verdict=Verdict(Outcome.REJECT, "scratch", RejectReason.DEFECT, defects[0], 1),
                          timings_ms={"acquire": 2.0, "analyse": 30.0, "total": 35.0}, scores={"max": 0.9})
        t = time.perf_counter()
        writer.publish(insp)
        publish_us.append((time.perf_counter() - t) * 1e6)
    ok = writer.flush(600)
    elapsed = time.perf_counter() - t0
    writer.close()
    rate = writer.stats.written / elapsed
    res = {
        "inspections": n, "defects_each": 3, "written": writer.stats.written, "lost": writer.stats.lost, "flushed": ok,
        "seconds": round(elapsed, 3), "inspections_per_s": round(rate, 1),
        "publish_us_p50": round(_pct(publish_us, 50), 1), "publish_us_p99": round(_pct(publish_us, 99), 1),
    }
    print(f"inserts: {writer.stats.written} inspections x 3 defects in {elapsed:.2f} s = {rate:,.0f} inspections/s "
          f"({3 * rate:,.0f} defects/s); publish() p50 {res['publish_us_p50']} us, p99 {res['publish_us_p99']} us; "
          f"lost {writer.stats.lost}", file=out)

    from station.db.archive import ImageArchive

    arch = ImageArchive(Path("/nonexistent"))
    img = (np.random.default_rng(2).integers(0, 40, (480, 640, 3)) + 100).astype(np.uint8)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        arch.encode(img)
        times.append((time.perf_counter() - t) * 1000)
    res["png_encode_ms_640x480_p50"] = round(statistics.median(times), 2)
    print(f"archive: PNG encode of a noisy 640x480 RGB image p50 {res['png_encode_ms_640x480_p50']} ms", file=out)
    return res


def build_large(url: str, rows: int, out: IO[str], *, days: int = 30, seed: int = 7) -> dict:
    """Fill ``url`` with ``rows`` inspections unless it already holds that many."""
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        have = conn.scalar(select(func.count()).select_from(InspectionRow))
    if have >= rows:
        print(f"large database: reusing {have:,} inspections", file=out)
        engine.dispose()
        return {"rows": have, "build_s": 0.0}
    rng = random.Random(seed)
    end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(days=days)
    step = (end - start) / rows
    t0 = time.perf_counter()
    chunk = 20_000
    next_id = (have or 0) + 1
    n_defects = 0
    ins_t, def_t = InspectionRow.__table__, DefectRow.__table__
    for base in range(have, rows, chunk):
        irows, drows = [], []
        for i in range(base, min(rows, base + chunk)):
            when = start + step * i
            reject = rng.random() < 0.06
            classes = rng.choices(CLASSES, CLASS_WEIGHTS, k=rng.randint(1, 3)) if reject else []
            irows.append({
                "id": next_id, "station_id": "bench", "sequence": i, "part_id": rng.randrange(10**9), "triggered_at": when,
                "cameras": "top", "recipe_name": RECIPES[i % 3], "recipe_version": 1, "recipe_hash": "0" * 64, "model_hashes": {},
                "outcome": "reject" if reject else "pass", "reason": classes[0] if reject else "no defect",
                "reject_reason": "defect" if reject else None, "plc_code": 1 if reject else 0, "top_class": classes[0] if reject else None,
                "defect_count": len(classes), "scores": {}, "thresholds": {}, "timings_ms": {"total": 30.0}, "error": None,
                "images_dropped": 0,
            })
            for c in classes:
                drows.append({"inspection_id": next_id, "triggered_at": when, "view": "top", "class_name": c, "confidence": 0.9,
                              "x0": 1, "y0": 1, "x1": 20, "y1": 20, "area_px": 300, "area_mm2": 3.0, "proposal_score": 0.5,
                              "zone": None, "mask_rle": "19 19 1 361"})
            next_id += 1
        with engine.begin() as conn:
            conn.execute(insert(ins_t), irows)
            if drows:
                conn.execute(insert(def_t), drows)
        n_defects += len(drows)
        done = min(rows, base + chunk)
        print(f"\r  generating: {done:,}/{rows:,} inspections", end="", file=out, flush=True)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE inspections")
            conn.exec_driver_sql("ANALYZE defects")
        conn.commit()
    build_s = time.perf_counter() - t0
    print(f"\nlarge database: {rows - have:,} inspections + {n_defects:,} defects generated in {build_s:.1f} s "
          f"({(rows - have) / build_s:,.0f} inspections/s bulk)", file=out)
    engine.dispose()
    return {"rows": rows, "build_s": round(build_s, 1)}


def bench_queries(url: str, repeat: int, out: IO[str]) -> dict:
    engine = make_engine(url)
    q = HistoryQueries(engine)
    with engine.connect() as conn:
        newest = conn.scalar(select(func.max(InspectionRow.triggered_at)))
        some_part = conn.scalar(select(InspectionRow.part_id).where(InspectionRow.id == 123_457)) or 0
    day = newest - dt.timedelta(hours=24)
    week = newest - dt.timedelta(days=7)
    shift = newest - dt.timedelta(hours=8)
    deep = q.page(HistoryFilter(), limit=50, offset=50_000).next_cursor
    cases = {
        "latest 50 (no filter)": lambda: q.page(HistoryFilter(), limit=50),
        "latest 50 rejects": lambda: q.page(HistoryFilter(verdict="reject"), limit=50),
        "latest 50 of a recipe": lambda: q.page(HistoryFilter(recipe=RECIPES[1]), limit=50),
        "latest 50 with rare class (burr)": lambda: q.page(HistoryFilter(defect_class="burr"), limit=50),
        "latest 50 rejects, recipe, last 24 h": lambda: q.page(HistoryFilter(verdict="reject", recipe=RECIPES[2], since=day), limit=50),
        "part ID lookup": lambda: q.page(HistoryFilter(part_id=some_part), limit=50),
        "page at row 50,000 (keyset)": lambda: q.page(HistoryFilter(), limit=50, cursor=deep),
        "page at row 5,000 (offset)": lambda: q.page(HistoryFilter(), limit=50, offset=5_000),
        "count last shift (8 h)": lambda: q.count(HistoryFilter(since=shift)),
        "count rejects last 24 h": lambda: q.count(HistoryFilter(since=day, verdict="reject")),
        "yield per hour, last 24 h": lambda: q.yield_by_hour(HistoryFilter(since=day)),
        "yield per shift, last 7 days": lambda: q.yield_by_shift(HistoryFilter(since=week), ShiftPlan.three_shifts("Europe/Berlin")),
        "Pareto, last 24 h": lambda: q.pareto(HistoryFilter(since=day)),
        "Pareto, last 7 days": lambda: q.pareto(HistoryFilter(since=week)),
        "Pareto of a recipe, last 7 days": lambda: q.pareto(HistoryFilter(since=week, recipe=RECIPES[0])),
        "recipe / class lists (filter menus)": lambda: (q.recipes(), q.defect_classes()),
        "count all": lambda: q.count(HistoryFilter()),
        "yield per hour, all 30 days": lambda: q.yield_by_hour(HistoryFilter()),
    }
    results = {}
    print(f"{'query':42s} {'p50 ms':>9s} {'p99 ms':>9s}", file=out)
    for name, fn in cases.items():
        fn()  # warm the page cache: the HMI's database is warm too
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        results[name] = {"p50_ms": round(statistics.median(times), 2), "p99_ms": round(_pct(times, 99), 2)}
        print(f"{name:42s} {results[name]['p50_ms']:9.2f} {results[name]['p99_ms']:9.2f}", file=out)
    engine.dispose()
    return results


def run_benchmark(directory: Path, *, inserts: int, rows: int, repeat: int, url: str | None = None, out: IO[str] = sys.stdout) -> dict:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    insert_url = url or f"sqlite:///{directory / 'bench-inserts.db'}"
    if url is None:
        for p in directory.glob("bench-inserts.db*"):
            p.unlink()
    report = {"url": insert_url.split("@")[-1], "inserts": bench_inserts(insert_url, inserts, out, directory / "bench-images")}
    large_url = url or f"sqlite:///{directory / f'bench-{rows}.db'}"
    report["large"] = build_large(large_url, rows, out)
    report["queries"] = bench_queries(large_url, repeat, out)
    return report
