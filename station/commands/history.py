"""`station history …` (query and export verdicts) and `station db upgrade|check|backup|sweep|bench`.

The database comes from ``--db URL``, else ``--config station.toml``, else the environment
variable STATION_DB_URL, else ``sqlite:///var/station.db`` (the demo's, relative to the
current directory). Bad filters exit 2 with the field and the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

DEFAULT_URL = "sqlite:///var/station.db"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="list or export stored verdicts (filters combine with AND)")
    _db_args(p)
    p.add_argument("--since", help="from this time, ISO 8601, inclusive; without an offset: the station's local time "
                                   "(its [shifts] timezone, or --timezone)")
    p.add_argument("--until", help="up to this time, ISO 8601, exclusive")
    p.add_argument("--recipe", help="recipe name")
    p.add_argument("--verdict", help="pass, reject or review")
    p.add_argument("--class", dest="defect_class", help="only inspections with a defect of this class")
    p.add_argument("--part", dest="part_id", help="part ID from the PLC")
    p.add_argument("--station", dest="station_id", help="station ID (shared PostgreSQL)")
    p.add_argument("--limit", type=int, default=50, help="rows (default 50; 0: all, for export)")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table",
                   help="csv: for spreadsheets (UTF-8 with BOM, local times with their UTC offset, no JSON cells, "
                        "defects as columns); jsonl: for programs (UTC, every value as stored)")
    p.add_argument("--defects", action="store_true", help="jsonl: include each inspection's defects")
    p.add_argument("--per-defect", action="store_true",
                   help="csv: one row per defect with its part's columns repeated (a part without defects: one row)")
    p.add_argument("--decimal-separator", choices=[".", ","], default=None,
                   help="csv: ',' for a spreadsheet set up with a decimal comma (cells then separated by ';'); "
                        "default: the station file's [export], else '.'")
    p.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    p.add_argument("--summary", action="store_true", help="print yield per hour/shift and the defect Pareto instead")
    p.add_argument("--timezone", default=None,
                   help="IANA time zone of the local times in csv and --report and of the shifts in --summary "
                        "(default: the station file's [shifts], else the system's)")
    g = p.add_argument_group("printable report (--report FILE)")
    g.add_argument("--report", type=Path, metavar="FILE",
                   help="write a self-contained HTML report (yield, verdicts, Pareto, yield per hour, recipe versions, "
                        "top rejects with their images, acknowledged alarms) of a shift, a day or --since/--until")
    g.add_argument("--shift", help="the shift's name (the station file's [shifts], else early, late, night); "
                                   "default: the shift running now")
    g.add_argument("--date", dest="report_date", help="the local date the shift started, or a whole day (YYYY-MM-DD)")
    g.add_argument("--archive", type=Path, help="the image archive directory (default: --config's, else var/images)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("db", help="history database: upgrade, check, backup, sweep the image archive, benchmark")
    dsub = p.add_subparsers(dest="db_action", required=True)
    q = dsub.add_parser("upgrade", help="migrate the schema to this station's version")
    _db_args(q)
    q.set_defaults(func=cmd_db_upgrade)
    q = dsub.add_parser("check", help="integrity check, schema revision, and (with --config) the image archive")
    _db_args(q)
    q.add_argument("--verify-images", action="store_true", help="re-hash every archived image (slow)")
    q.set_defaults(func=cmd_db_check)
    q = dsub.add_parser("backup", help="copy a live SQLite database with SQLite's online backup API")
    q.add_argument("path", type=Path, help="the backup file to create")
    q.add_argument("--force", action="store_true", help="overwrite an existing file")
    _db_args(q)
    q.set_defaults(func=cmd_db_backup)
    q = dsub.add_parser("sweep", help="apply image retention and reconcile files with rows (needs --config)")
    _db_args(q)
    q.add_argument("--dry-run", action="store_true", help="report only")
    q.set_defaults(func=cmd_db_sweep)
    q = dsub.add_parser("bench", help="benchmark: sustained inserts/s and query latencies on a large database")
    q.add_argument("--dir", type=Path, default=Path("var/bench"), help="where the benchmark databases go")
    q.add_argument("--inserts", type=int, default=20_000, help="inspections for the insert benchmark")
    q.add_argument("--rows", type=int, default=1_000_000, help="inspections in the query-latency database")
    q.add_argument("--repeat", type=int, default=20, help="runs per query")
    q.add_argument("--db", dest="url", help="run against this database URL instead (e.g. PostgreSQL); it is filled with test data")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_db_bench)


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", dest="url", help="database URL (sqlite:///path or postgresql+psycopg://…)")
    p.add_argument("--config", type=Path, help="station.toml: its database, archive and station ID")


def _resolve(args) -> tuple[str, object | None]:
    """(database URL, StationConfig or None)."""
    config = None
    if getattr(args, "config", None):
        from station.config import load_station_config

        config = load_station_config(args.config)
    if args.url:
        return args.url, config
    if config is not None:
        return config.database.url, config
    return os.environ.get("STATION_DB_URL", DEFAULT_URL), None


def _engine(url: str, must_exist: bool = True):
    from station.db.engine import make_engine, sqlite_path

    path = sqlite_path(url)
    if must_exist and path is not None and not path.exists():
        raise SystemExit(f"error: no history database at {path} (give --db or --config)")
    return make_engine(url)


def _err(msg: str, code: int) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


# ---- station history ----------------------------------------------------------------------
def cmd_history(args) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from station.db.filters import FilterError, HistoryFilter

    url, config = _resolve(args)
    args.config_obj = config
    args.shift_plan = config.shifts.plan() if config is not None else None
    try:
        zone = _shift_plan(args).zone()  # --since/--until without an offset are the station's local time
    except ValueError as exc:
        return _err(f"timezone: {exc}", 2)
    try:
        flt = HistoryFilter.parse(
            zone, since=args.since, until=args.until, recipe=args.recipe, verdict=args.verdict,
            defect_class=args.defect_class, part_id=args.part_id, station_id=args.station_id,
        )
        if args.limit < 0:
            raise FilterError("limit", f"must be >= 0, got {args.limit}")
    except FilterError as exc:
        return _err(str(exc), 2)
    engine = _engine(url)
    try:
        return _history(args, engine, flt)
    except FilterError as exc:
        return _err(str(exc), 2)
    except SQLAlchemyError as exc:
        return _err(f"cannot read the history database: {str(exc).splitlines()[0]}", 1)
    except BrokenPipeError:  # `station history … | head`
        sys.stdout = None  # nothing more can be written; keep Python from complaining at exit
        return 0
    finally:
        engine.dispose()


def _history(args, engine, flt) -> int:
    from station.db.export import write_csv, write_jsonl
    from station.db.queries import HistoryQueries, summary_dict

    try:
        plan = _shift_plan(args)
    except ValueError as exc:
        return _err(f"timezone: {exc}", 2)
    zone = plan.zone()
    q = HistoryQueries(engine)
    q.check(flt)
    if args.report is not None:
        return _report(args, q, flt, plan)
    if args.shift or args.report_date:
        return _err("--shift and --date are for --report", 2)
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        if args.summary:
            _print_summary(q, flt, plan, out)
            return 0
        limit = None if args.limit == 0 else args.limit
        if args.format == "csv":
            n = write_csv(lambda: q.iter_export(flt, limit=limit, with_defects=True, check=False), out, zone=zone,
                          per_defect=args.per_defect, decimal=_decimal_separator(args))
        elif args.format == "jsonl":
            n = write_jsonl(q.iter_export(flt, limit=limit, with_defects=args.defects, check=False), out)
        else:
            n = _print_table([summary_dict(r) for r in q.iter_export(flt, limit=limit, check=False)], out)
        out.flush()
        if args.output:
            print(f"{n} inspections written to {args.output}", file=sys.stderr)
        return 0
    finally:
        if args.output:
            out.close()


def _report(args, q, flt, plan) -> int:
    from station.db.report_html import render_html
    from station.db.shift_report import build_report, report_window

    zone = plan.zone()
    since, until, title = report_window(plan, shift=args.shift, day=args.report_date,
                                        since=flt.since, until=flt.until)
    archive = args.archive or (args.config_obj.archive.dir if args.config_obj else Path("var/images"))
    report = build_report(q, flt.model_copy(update={"since": since, "until": until}), zone, title)
    args.report.write_text(render_html(report, archive), encoding="utf-8")
    print(f"{title}: {report.total} parts, {len(report.rejects)} rejects shown, written to {args.report}", file=sys.stderr)
    return 0


def _print_table(rows: list[dict], out) -> int:
    cols = ["id", "triggered_at", "station_id", "part_id", "recipe_name", "outcome", "top_class", "defect_count", "reason"]
    cells = [[str(r.get(c) if r.get(c) is not None else "") for c in cols] for r in rows]
    widths = [min(40, max([len(c)] + [len(row[i]) for row in cells])) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)), file=out)
    for row in cells:
        print("  ".join(v[:w].ljust(w) for v, w in zip(row, widths)), file=out)
    print(f"({len(rows)} inspections, newest first)", file=out)
    return len(rows)


def _decimal_separator(args) -> str:
    """--decimal-separator, else the station file's [export] decimal_separator, else '.'."""
    if args.decimal_separator is not None:
        return args.decimal_separator
    return args.config_obj.export.decimal_separator if args.config_obj is not None else "."


def _shift_plan(args):
    """The station file's shift calendar (else 06/14/22 in the system's zone), in --timezone if
    given: its zone is the station's local time (CSV, summary, report). ValueError for an unknown zone."""
    from dataclasses import replace

    from station.shifts import ShiftPlan, system_zone_name

    plan = args.shift_plan or ShiftPlan.three_shifts(system_zone_name())
    return replace(plan, timezone=args.timezone) if args.timezone else plan


def _print_summary(q, flt, plan, out) -> None:
    """Yield per hour and per shift (``plan``), and the defect Pareto."""
    print("yield per hour (UTC):", file=out)
    for b in q.yield_by_hour(flt, check=False):
        print(f"  {b.start:%Y-%m-%d %H:00}  {b.total:7d} parts  {b.rejected:6d} rejects  {b.reviewed:6d} reviews  "
              f"{b.yield_pct:6.2f} %", file=out)
    print(f"yield per shift ({plan.timezone}):", file=out)
    for s in q.yield_by_shift(flt, plan, check=False):
        print(f"  {s.date} {s.shift:6s} {s.total:7d} parts  {s.rejected:6d} rejects  {s.reviewed:6d} reviews  "
              f"{s.yield_pct:6.2f} %", file=out)
    print("defect Pareto:", file=out)
    for p in q.pareto(flt, check=False):
        print(f"  {p.class_name:20s} {p.count:8d}  {100 * p.share:6.2f} %  cum {100 * p.cumulative:6.2f} %", file=out)


# ---- station db ----------------------------------------------------------------------------
def cmd_db_upgrade(args) -> int:
    from station.db.migrate import SchemaTooNew, upgrade

    url, _ = _resolve(args)
    engine = _engine(url, must_exist=False)
    try:
        before, after = upgrade(engine)
    except SchemaTooNew as exc:
        return _err(str(exc), 1)
    finally:
        engine.dispose()
    print(f"schema: {before or 'empty'} -> {after}" if before != after else f"schema already at {after}")
    return 0


def cmd_db_check(args) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from station.db.engine import sqlite_path
    from station.db.migrate import SchemaTooNew, check_known, head_revision

    url, config = _resolve(args)
    engine = _engine(url)
    problems = []
    try:
        path = sqlite_path(url)
        if path is not None:
            try:
                with sqlite3.connect(path) as conn:
                    result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
                    fks = conn.execute("PRAGMA foreign_key_check").fetchall()
                print(f"integrity_check: {', '.join(result[:10])}")
                if result != ["ok"]:
                    problems.append("integrity_check failed: restore the last backup (`station db backup` makes them)")
                if fks:
                    problems.append(f"{len(fks)} rows violate foreign keys")
            except sqlite3.DatabaseError as exc:
                problems.append(f"{path} cannot be read as a SQLite database: {exc}")
        if not problems:
            try:
                rev = check_known(engine)
                head = head_revision()
                print(f"schema revision: {rev or 'none (empty database)'} (this station: {head})")
                if rev != head:
                    problems.append(f"schema is at {rev}, not {head}: run `station db upgrade`")
            except SchemaTooNew as exc:
                problems.append(str(exc))
            except SQLAlchemyError as exc:
                problems.append(f"cannot read the schema revision: {str(exc).splitlines()[0]}")
        if config is not None and not problems:
            from station.db.archive import ImageArchive, reconcile

            rep = reconcile(engine, ImageArchive(config.archive.dir), config.station_id, verify=args.verify_images, dry_run=True)
            print(
                f"image archive {config.archive.dir}: {len(rep.orphan_files_removed)} files without row, "
                f"{len(rep.dangling_rows_removed)} rows without file, {len(rep.temp_files_removed)} temp files, "
                f"{len(rep.mismatched)} mismatched"
            )
            if not rep.clean:
                problems.append("image archive and rows disagree: run `station db sweep`")
    finally:
        engine.dispose()
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_db_backup(args) -> int:
    from station.db.engine import sqlite_path

    url, _ = _resolve(args)
    src = sqlite_path(url)
    if src is None:
        return _err(f"backup works on SQLite files; for {url.split('://')[0]} use the server's tools (pg_dump)", 2)
    if not src.exists():
        return _err(f"no database at {src}", 1)
    target: Path = args.path
    if target.exists() and not args.force:
        return _err(f"{target} exists (use --force to overwrite)", 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    tmp.unlink(missing_ok=True)
    # the online backup API copies a consistent snapshot while the station keeps writing
    with sqlite3.connect(src) as s, sqlite3.connect(tmp) as d:
        s.backup(d, pages=1024)
        ok = d.execute("PRAGMA integrity_check").fetchone()[0]
        n = d.execute("SELECT count(*) FROM inspections").fetchone()[0] if _has_table(d, "inspections") else 0
    if ok != "ok":
        tmp.unlink(missing_ok=True)
        return _err(f"backup copy failed its integrity check: {ok}", 1)
    os.replace(tmp, target)
    print(f"backup of {src} written to {target} ({target.stat().st_size} bytes, {n} inspections)")
    return 0


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def cmd_db_sweep(args) -> int:
    from station.db.archive import ImageArchive, apply_retention, reconcile

    url, config = _resolve(args)
    if config is None:
        return _err("sweep needs --config (archive directory, retention and station ID)", 2)
    engine = _engine(url)
    try:
        archive = ImageArchive(config.archive.dir)
        if not args.dry_run:
            ret = apply_retention(engine, archive, config.archive, config.station_id)
            print(f"retention: {ret.deleted_files} images ({ret.deleted_bytes} bytes) deleted; {ret.total_bytes_after} bytes kept")
            if ret.over_budget_young:
                print("warning: still over max_bytes, but the rest is younger than min_age_days", file=sys.stderr)
        rep = reconcile(engine, archive, config.station_id, dry_run=args.dry_run)
        verb = "found" if args.dry_run else "removed"
        print(
            f"reconcile: {len(rep.orphan_files_removed)} files without row, {len(rep.dangling_rows_removed)} rows without file, "
            f"{len(rep.temp_files_removed)} temp files {verb}; {len(rep.mismatched)} mismatched (kept)"
            + (f"; {len(rep.kept_set_aside)} files of a set-aside corrupt database (kept)" if rep.kept_set_aside else "")
        )
        return 0 if not rep.mismatched else 1
    finally:
        engine.dispose()


def cmd_db_bench(args) -> int:
    from station.benchmarks.history import run_benchmark

    report = run_benchmark(args.dir, inserts=args.inserts, rows=args.rows, repeat=args.repeat, url=args.url, out=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


__all__ = ["register"]
