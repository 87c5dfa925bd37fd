"""Core subcommands: demo, run, inspect, recipes, simulate."""

from __future__ import annotations

import argparse
import csv
import errno
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from station.commands.common import recipes_dir, resolve_recipe
from station.config import load_station_config
from station.config_errors import ConfigError
from station.ports import listen_error

log = logging.getLogger("station.cli")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a complete station on embedded defaults (no hardware)")
    p.add_argument("--headless", action="store_true", help="no HMI: inspect --parts parts, print a summary, exit")
    p.add_argument("--parts", type=int, default=None,
                   help="parts to inspect, then exit (--headless: default 50; with the HMI: default none, run until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--root", type=Path, default=Path.cwd(), help="where var/ (database, images, models) lives")
    p.add_argument("--recipe", default="demo-part", help="recipe to run (default demo-part)")
    p.add_argument("--replay", type=Path, default=None,
                   help="play images from this folder or manifest CSV instead of the simulated camera "
                        "(e.g. ../shared/data/magnetic-tile-train/manifest.csv with --recipe magnetic-tile)")
    p.add_argument("--interval-ms", type=float, default=None,
                   help="time between parts (default: as fast as inspected, 500 ms with the HMI)")
    p.add_argument("--hmi-port", type=int, default=8080)
    p.add_argument("--plc-port", type=int, default=5020)
    p.add_argument("--no-plc", action="store_true", help="do not start the Modbus TCP server")
    p.add_argument("--summary-every", type=float, default=10.0, metavar="S",
                   help="with the HMI: print a summary line every S seconds (default 10)")
    # also accepted after the subcommand (`station demo --verbose`); SUPPRESS keeps `station -v demo`
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging, and one console line per part (always in var/station.log)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run the station from a station file")
    p.add_argument("--config", type=Path, required=True, help="station.toml")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="inspect image files offline and print verdicts")
    p.add_argument("--recipe", required=True, help="recipe name (in --recipes-dir) or path to a recipe file")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--overlay", type=Path, help="write overlay PNGs into this directory")
    p.add_argument("--recipes-dir", type=Path, default=None)
    p.add_argument("--models-dir", type=Path, default=Path("var/models"))
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "rknn"])
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("recipes", help="list, show or check recipes")
    rsub = p.add_subparsers(dest="action", required=True)
    q = rsub.add_parser("list", help="recipes in the recipes directory")
    q.add_argument("--recipes-dir", type=Path, default=None)
    q.set_defaults(func=cmd_recipes_list)
    q = rsub.add_parser("show", help="print a recipe as validated (defaults filled in)")
    q.add_argument("name")
    q.add_argument("--recipes-dir", type=Path, default=None)
    q.set_defaults(func=cmd_recipes_show)
    q = rsub.add_parser("check", help="validate a recipe file and the models it loads (what a PLC LOAD_RECIPE "
                                      "would load); exit 2 naming file, key and reason if it is bad")
    q.add_argument("file", type=Path)
    where = q.add_mutually_exclusive_group()
    where.add_argument("--models-dir", type=Path, default=None, help="where the models are (default: var/models)")
    where.add_argument("--config", type=Path, default=None, help="a station file: check against its models_dir")
    q.set_defaults(func=cmd_recipes_check)

    p = sub.add_parser("simulate", help="write simulated part images, masks and a manifest CSV")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--defect-rate", type=float, default=0.5)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.set_defaults(func=cmd_simulate)


# ---- demo / run --------------------------------------------------------------------------
def _summary(results: list[dict], stats: dict, elapsed_s: float) -> dict:
    return {
        "parts": len(results),
        "pass": sum(r["verdict"] == "pass" for r in results),
        "reject": sum(r["verdict"] == "reject" for r in results),
        "review": sum(r["verdict"] == "review" for r in results),
        "reject_reasons": stats["reject_reasons"],
        "reject_classes": stats["reject_classes"],
        "elapsed_s": round(elapsed_s, 3),
        "parts_per_s": round(len(results) / elapsed_s, 3) if elapsed_s > 0 else None,
        "latency_ms": stats["latency_ms"],
        "verdicts": results,
    }


def _print_summary(summary: dict) -> None:
    print(f"parts {summary['parts']}  pass {summary['pass']}  reject {summary['reject']}  review {summary['review']}  "
          f"({summary['parts_per_s']} parts/s)")
    if summary["reject_reasons"]:
        print("reject reasons: " + ", ".join(f"{k} {v}" for k, v in summary["reject_reasons"].items()))
    print(f"{'stage':<12}{'p50 ms':>10}{'p99 ms':>10}")
    for stage, lat in summary["latency_ms"].items():
        print(f"{stage:<12}{lat['p50']:>10.1f}{lat['p99']:>10.1f}")


def _pull_models(config, recipe_name: str) -> None:
    """Make sure the recipe's models are in the models directory (local copies first)."""
    from station.models_store import ensure_recipe_models

    ensure_recipe_models(config.recipes_dir / f"{recipe_name}.toml", config.models_dir)


def _refuse_ports_in_use(config, source: str, plc_key: str, hmi_key: str) -> None:
    """ConfigError (exit 2, one line naming the port and ``plc_key`` / ``hmi_key``, the setting or
    flag that changes it) when the Modbus server's or the HMI's port is already in use."""
    wanted = []
    if config.plc.enabled and config.plc.mode == "server":
        wanted.append((config.plc.host, config.plc.port, plc_key, "the PLC's Modbus server"))
    if config.hmi.enabled:
        wanted.append((config.hmi.host, config.hmi.port, hmi_key, "the HMI"))
    for host, port, key, what in wanted:
        exc = listen_error(host, port)
        if exc is not None and exc.errno == errno.EADDRINUSE:
            raise ConfigError(source, [(key, f"port {port} on {host} for {what} is already in use (another station "
                                              f"running?); choose a free port with {key}")])


def _start_station(config, sinks=(), source: str | None = None):
    """A started Station, or None after printing why it cannot run (exit status 1). An unknown
    ``active_recipe`` of the station file ``source`` is a ConfigError (exit 2)."""
    from station.app import ActiveRecipeUnknown, Station, StartupError

    station = Station(config, sinks=sinks)
    try:
        station.start()
    except ActiveRecipeUnknown as exc:
        if source is None:
            print(f"error: {exc}", file=sys.stderr)
            return None
        raise ConfigError(source, [("active_recipe", str(exc))]) from None
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return station


def cmd_demo(args: argparse.Namespace) -> int:
    from station.demo import Conveyor, VerdictRecorder, demo_config, run_headless, stop_hmi_after, when_hmi_serves
    from station.demo_console import PeriodicSummary, print_banner, route_logs

    if args.parts is not None and args.parts < 1:
        raise ConfigError("station demo", [("--parts", f"must be at least 1, got {args.parts}")])
    log_file = args.root.resolve() / "var" / "station.log"
    route_logs(log_file, verbose=args.verbose)

    overrides = {}
    if args.replay is not None:
        from station.paths import SHIPPED_RECIPES
        from station.recipe import load_recipe

        recipe = load_recipe(SHIPPED_RECIPES / f"{args.recipe}.toml").recipe
        overrides["cameras"] = [
            {"type": "replay", "name": cam.name, "path": str(args.replay.resolve()), "shuffle_seed": 1} for cam in recipe.cameras
        ]
    config = demo_config(
        args.root.resolve(),
        active_recipe=args.recipe,
        **overrides,
        plc={"mode": "server", "host": "127.0.0.1", "port": args.plc_port, "enabled": not (args.no_plc or args.headless)},
        hmi={"host": "127.0.0.1", "port": args.hmi_port, "demo_autologin": True, "enabled": not args.headless},
    )
    (args.root / "var").mkdir(parents=True, exist_ok=True)
    _refuse_ports_in_use(config, "station demo", "--plc-port", "--hmi-port")
    _pull_models(config, args.recipe)  # recipes_dir is var/recipes: copies of recipes/
    recorder = VerdictRecorder()
    station = _start_station(config, sinks=[recorder] if args.headless else [])
    if station is None:
        return 1
    try:
        if args.headless:
            started = time.monotonic()
            interval = (args.interval_ms or 0) / 1000.0
            results = run_headless(station.pipeline, recorder, args.parts or 50, interval,
                                   max_in_flight=station.pipeline.inference_workers)
            summary = _summary(results, station.stats.snapshot(), time.monotonic() - started)
            if station.history is not None:
                station.history.flush(timeout=30)
            summary["database"] = config.database.url
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                _print_summary(summary)
            return 0
        interval_s = (args.interval_ms or 500) / 1000.0
        if station.plc is None:
            conveyor = Conveyor(station.pipeline, interval_s, max_in_flight=station.pipeline.inference_workers)
            conveyor.start(args.parts)
            line = "PLC:  off (parts triggered directly)"
        else:  # the line's PLC, played through the station's own Modbus server
            from station.plc.simulator import PlcSimulator

            conveyor = PlcSimulator(config.plc.host, config.plc.port, interval_s=interval_s,
                                    max_outstanding=station.pipeline.inference_workers, max_parts=args.parts)
            conveyor.start()
            line = f"PLC:  Modbus TCP {config.plc.host}:{config.plc.port} (a simulated PLC drives the parts)"
        from station.hmi.app import run as run_hmi

        banner = [
            f"Inspection station demo: recipe {args.recipe}",
            f"HMI:  http://{config.hmi.host}:{config.hmi.port}/  (operator view, no login needed)",
            line,
            f"Log:  {log_file}  (one line per part)",
            "Stop: Ctrl-C" + (f", or after {args.parts} parts" if args.parts else ""),
        ]
        summary = PeriodicSummary(station.stats, args.summary_every)

        def announce() -> None:  # once the address answers: then the summaries follow it
            print_banner(banner)
            summary.start()

        when_hmi_serves(announce)
        if args.parts:
            stop_hmi_after(station.stats, args.parts)
        try:
            run_hmi(station, config.hmi)  # blocks until the HMI server stops
        finally:
            conveyor.stop()
            summary.stop()
        return 0
    finally:
        station.stop()


def cmd_run(args: argparse.Namespace) -> int:
    config = load_station_config(args.config)
    _refuse_ports_in_use(config, str(args.config), "[plc] port", "[hmi] port")
    station = _start_station(config, source=str(args.config))
    if station is None:
        return 1
    from station.watchdog import ServiceWatchdog

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        # READY=1 on entry; WATCHDOG=1 only while the pipeline's publisher makes progress
        with ServiceWatchdog(station.pipeline) as watchdog:
            if config.hmi.enabled:
                from station.hmi.app import run as run_hmi

                watchdog.run_in_background(stop)
                try:
                    run_hmi(station, config.hmi)  # blocks until the HMI server stops (SIGTERM/SIGINT)
                finally:
                    stop.set()
            else:
                signal.signal(signal.SIGINT, lambda *_: stop.set())
                while not stop.wait(0.5):
                    watchdog.tick()
        return 0
    finally:
        station.stop()


# ---- inspect -------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    from station.images import read_image_file
    from station.inspection import RejectReason, View
    from station.models_store import ensure_recipe_models
    from station.stages import inspect_views
    from station.vision.inspector import build_inspector

    loaded = resolve_recipe(args.recipe, args.recipes_dir)
    recipe = loaded.recipe
    ensure_recipe_models(loaded.path, args.models_dir)
    inspector = build_inspector(loaded, models_dir=args.models_dir, backend=args.backend, threads=0)
    if args.overlay:
        args.overlay.mkdir(parents=True, exist_ok=True)
    failures = 0
    def skipped(path: Path, reason: str) -> None:
        print(json.dumps({"image": str(path), "skipped": reason}) if args.json else f"SKIPPED {path}: {reason}")

    for n, path in enumerate(args.images, 1):
        try:
            image = read_image_file(path)  # truncated, corrupt, too many pixels: ImageError, skipped
        except Exception as exc:  # one unreadable image must not stop the others; it gets no verdict
            failures += 1
            skipped(path, str(exc))
            continue
        insp = inspect_views(loaded, inspector, [View(camera=recipe.cameras[0].name, image=image, source=str(path))],
                             sequence=n, part_id=n)
        if insp.failure is not None:
            failures += 1
            if insp.failure.reason is RejectReason.IMAGE_ERROR:  # not inspected: no verdict to report
                skipped(path, insp.failure.text)
                continue
        row = {"image": str(path), **insp.summary()}
        if args.overlay is not None and insp.overlay is not None:
            out = args.overlay / f"{path.stem}_overlay.png"
            cv2.imwrite(str(out), cv2.cvtColor(np.asarray(insp.overlay), cv2.COLOR_RGB2BGR))
            row["overlay"] = str(out)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{path}: {insp.verdict.outcome.value.upper()}  {insp.verdict.reason}")
    return 1 if failures else 0


# ---- recipes ---------------------------------------------------------------------------------
def cmd_recipes_list(args: argparse.Namespace) -> int:
    from station.recipe import RecipeBook

    book = RecipeBook(recipes_dir(args.recipes_dir))
    for name, loaded in sorted(book.recipes.items()):
        r = loaded.recipe
        print(f"{name:<20} v{r.version:<3} plc_id {r.plc_id:<4} budget {r.time_budget_ms} ms  {r.description}")
    for err in book.errors:
        print(f"INVALID {err}", file=sys.stderr)
    return 2 if book.errors else 0


def cmd_recipes_show(args: argparse.Namespace) -> int:
    loaded = resolve_recipe(args.name, args.recipes_dir)
    print(json.dumps(loaded.recipe.model_dump(mode="json"), indent=2))
    return 0


def cmd_recipes_check(args: argparse.Namespace) -> int:
    """The recipe as the station loads it, then every model it loads: metadata, file, sha256, the
    SAM pair (station.recipe_models). Any problem: ConfigError (exit 2) naming file, key, reason."""
    from station.recipe import load_recipe
    from station.recipe_models import check_recipe_models

    loaded = load_recipe(args.file)  # ConfigError -> exit 2 in cli.main
    models_dir = args.models_dir or (load_station_config(args.config).models_dir if args.config else Path("var/models"))
    checks = check_recipe_models(loaded.recipe, models_dir)
    problems = [(c.key, f"model {c.name}: {c.error}") for c in checks if c.error is not None]
    if problems:
        raise ConfigError(args.file, problems)
    models = f"{len(checks)} models in {models_dir} present, sha256 ok" if checks else "no model needed"
    print(f"{args.file}: ok ({loaded.recipe.name} v{loaded.recipe.version}; {models})")
    return 0


# ---- simulate --------------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from station.camera.simulated import synthesize_part

    (args.out / "images").mkdir(parents=True, exist_ok=True)
    (args.out / "masks").mkdir(parents=True, exist_ok=True)
    classes = ["scratch", "crack", "stain"]
    with open(args.out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "mask", "class"])
        for n in range(args.count):
            part = synthesize_part(args.seed, n, args.width, args.height, args.defect_rate, classes)
            mask = np.zeros(part.image.shape[:2], np.uint8)
            for m in part.masks.values():
                mask[m] = 255
            img_rel, mask_rel = f"images/{n:05d}.png", f"masks/{n:05d}.png"
            cv2.imwrite(str(args.out / img_rel), part.image[:, :, 0])
            cv2.imwrite(str(args.out / mask_rel), mask)
            writer.writerow([img_rel, mask_rel, part.truth_class])
    print(f"wrote {args.count} parts to {args.out / 'manifest.csv'}")
    return 0


__all__ = ["register", "ConfigError"]
