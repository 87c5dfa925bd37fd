"""`station train` and `station eval`: the recipe's models from labelled images, and their scores."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from station.commands.common import resolve_recipe

DEFAULT_OUT = Path("var/trained")  # not the repository's models/trained: that only when asked (--out)
DEFAULT_HOLDOUT = 0.3  # --from-history: the validation needs parts the candidate never saw


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a recipe's proposal stage and classifier from a manifest CSV or from reviewed parts (needs the train extra)",
        description="Train a recipe's models. From a manifest (--data): models and record go to --out (default var/trained); "
                    "the shipped files (models/trained/, the recipe file) are only written when asked: "
                    "--out models/trained --update-recipe. From the history (--from-history): the reviewed parts become the "
                    "training set and the result is stored as a CANDIDATE recipe version (models <recipe>-v<N>-* in the "
                    "station's models directory); the active recipe and the repository are never written.")
    p.add_argument("--recipe", required=True, help="recipe name (in --recipes-dir) or path to a .toml")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="manifest CSV: image, mask, class, extra columns")
    source.add_argument("--from-history", action="store_true",
                        help="train on the reviewed parts of the history database (--config or --db and --archive)")
    p.add_argument("--group-by", help="column whose rows are one part (e.g. tile_group): folds never split it (--data, --base-data)")
    p.add_argument("--folds", type=int, default=5, help="grouped cross-validation folds before the final training (0/1: none)")
    p.add_argument("--out", type=Path, default=None,
                   help="where the trained models and record go (default var/trained; --from-history: the models directory)")
    p.add_argument("--update-recipe", action="store_true",
                   help="also rewrite the recipe file to use the new models and thresholds (--data only)")
    p.add_argument("--max-escape", type=float, default=None, metavar="RATE",
                   help="choose a review band (review_at) for at most this share of escaped defective images/parts, "
                        "cross-fitted on the held-out folds like the operating point (e.g. 0.05)")
    p.add_argument("--work-dir", type=Path, default=Path("var/train"), help="fold models (not committed)")
    p.add_argument("--models-dir", type=Path, default=None, help="SAM models for the fold evaluations (default var/models)")
    p.add_argument("--recipes-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cv-mask-source", choices=["sam", "proposal"],
                   help="outline every class this way in the CV folds (proposal: no SAM encoder runs, much faster)")
    p.add_argument("--proposal-steps", type=int, default=None, metavar="N",
                   help="training steps of a U-Net proposal stage (recipe vision.proposal_net = \"unet\"; default 2500: ~8 min on 2 cores)")
    p.add_argument("--learning-curve", metavar="FRACTIONS",
                   help="backbone recipe, --data: instead of training, measure how the held-out ranking and the 1 %% point "
                        "grow with the training parts: each fold's head trained on these shares of its training parts "
                        "(e.g. 0.25,0.5,0.75; the full set is added), judged on the whole held-out fold; report to "
                        "--out/<recipe>.learning-curve.json, no model kept")
    p.add_argument("--draws", type=int, default=3, help="--learning-curve: draws of training parts per fraction (default 3)")
    _history_args(p)
    p.add_argument("--holdout", type=float, default=None, metavar="SHARE",
                   help=f"--from-history: keep this share of the reviewed parts out of the training, so the validation judges "
                        f"the candidate on parts it never saw (default {DEFAULT_HOLDOUT}; 0: train on all, figures optimistic)")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--base-data", type=Path, metavar="MANIFEST",
                      help="--from-history: train on this manifest (the recipe's original training set; its part column "
                           "--group-by) plus the reviewed parts. A backbone recipe finds its own from its training record")
    base.add_argument("--no-base-data", action="store_true",
                      help="--from-history, backbone recipe: train on the reviewed parts only, not on the original training set too")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="inspect every image of a manifest and report detection, false rejects, escapes, reviews, "
                                    "type accuracy, IoU; or compare a candidate recipe version with the active one on reviewed parts")
    p.add_argument("--recipe", required=True, help="recipe name or path; with --from-history NAME@VERSION (a stored version)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path)
    source.add_argument("--from-history", action="store_true",
                        help="replay the reviewed parts of the history through NAME@VERSION and the active recipe, side by side "
                             "(stored for the HMI's recipe page)")
    p.add_argument("--group-by", help="column whose rows are the views of one part: also part-level rates")
    p.add_argument("--json", action="store_true", help="one JSON object with the metrics at top level")
    p.add_argument("--models-dir", type=Path, default=None, help="default var/models (with --config: the station's)")
    p.add_argument("--recipes-dir", type=Path, default=None)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    _history_args(p)
    p.set_defaults(func=cmd_eval)


def _history_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("history (with --from-history)")
    g.add_argument("--config", type=Path, help="station.toml: its database, archive, recipes and models directories")
    g.add_argument("--db", dest="url", help="history database URL (instead of --config)")
    g.add_argument("--archive", type=Path, help="the image archive directory (instead of --config)")
    g.add_argument("--since", help="reviewed parts inspected from this time (ISO 8601; local time if no offset)")
    g.add_argument("--until", help="… until this time (exclusive)")
    g.add_argument("--station", dest="station_id", help="only this station's parts")


class _UsageError(Exception):
    pass


def _usage_errors(command, *args) -> int:
    """Run a --from-history command; a usage error is one line and exit 2."""
    try:
        return command(*args)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _history_source(args) -> dict:
    """Database URL, archive, recipes and models directories, and the time/station filters."""
    from station.db.filters import FilterError, HistoryFilter

    config = None
    if args.config is not None:
        from station.config import load_station_config

        config = load_station_config(args.config)
    url = args.url or (config.database.url if config else None)
    archive = args.archive or (config.archive.dir if config else None)
    if url is None or archive is None:
        raise _UsageError("--from-history needs the history: --config station.toml, or --db URL and --archive DIR")
    try:
        zone = config.shifts.plan().zone() if config is not None else None  # else the system's
        flt = HistoryFilter.parse(zone, since=args.since, until=args.until, station_id=args.station_id)
    except FilterError as exc:
        raise _UsageError(str(exc)) from None
    return {
        "db_url": url, "archive_dir": Path(archive),
        "recipes_dir": args.recipes_dir or (config.recipes_dir if config else None),
        "models_dir": args.models_dir or (config.models_dir if config else Path("var/models")),
        "since": flt.since, "until": flt.until, "station_id": flt.station_id,
    }


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def print_metrics(m: dict) -> None:
    keys = ["detection_rate", "false_reject_rate", "escape_rate", "review_rate", "defective_review_rate", "type_accuracy",
            "mean_iou", "part_detection_rate", "part_false_reject_rate", "part_escape_rate", "part_review_rate",
            "part_defective_review_rate", "auroc", "part_auroc", "detection_at_1pct_false_reject", "threshold_at_1pct_false_reject"]
    for k in keys:
        if k in m:
            ci = m.get(k.replace("_rate", "_ci95")) if k.endswith("false_reject_rate") else None
            print(f"{k:<32}{_fmt(m[k])}" + (f"   95 % interval (Wilson) {_fmt(ci[0])}-{_fmt(ci[1])}" if ci else ""))
    counts = f"images {m['images']} (defective {m['defective_images']}, good {m['good_images']}, with masks {m['images_with_masks']})"
    if "parts" in m:
        counts += f"  parts {m['parts']} (defective {m['defective_parts']}, good {m['good_parts']})"
    print(counts)
    print(f"skipped {m['skipped']}" + (": " + ", ".join(f"{k} {v}" for k, v in m["skipped_reasons"].items()) if m["skipped"] else ""))
    for s in m.get("skipped_rows", []):
        print(f"  row {s['row']}: {s['reason']}")
    print(f"{'class':<14}{'images':>7}{'rejected':>9}{'reviewed':>9}{'type acc':>9}{'IoU':>8}")
    for cls, e in m["per_class"].items():
        print(f"{cls:<14}{e['images']:>7}{e['rejected']:>9}{e.get('reviewed', 0):>9}{_fmt(e.get('type_accuracy')):>9}"
              f"{_fmt(e.get('mean_iou')):>8}")
    print(f"{'stage':<12}{'p50 ms':>10}{'p99 ms':>10}")
    for stage, lat in m["latency_ms"].items():
        print(f"{stage:<12}{lat['p50']:>10.1f}{lat['p99']:>10.1f}")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.from_history:
        return _usage_errors(_eval_from_history, args)
    from station.inference.metadata import ModelError
    from station.models_store import ensure_recipe_models
    from station.vision.dataset import ManifestError, read_manifest
    from station.progress import counting, step
    from station.vision.evaluate import evaluate
    from station.vision.inspector import build_inspector
    from station.vision.trained_on import trained_on

    loaded = resolve_recipe(args.recipe, args.recipes_dir)
    args.models_dir = args.models_dir or Path("var/models")
    try:
        rows = read_manifest(args.data)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        ensure_recipe_models(loaded.path, args.models_dir)
        inspector = build_inspector(loaded, args.models_dir, backend=args.backend, threads=args.threads)
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    warnings = []
    seen = trained_on(loaded, args.data, rows, args.models_dir)
    if seen is not None:  # said before the run too: the person may stop it and pick other images
        warnings.append(seen.warning())
        print(f"WARNING: {warnings[-1]}", file=sys.stderr)
    try:
        with step(f"evaluate {loaded.recipe.name} on {args.data}", total=len(rows), unit="images") as p:
            metrics, _ = evaluate(inspector, loaded, rows, args.group_by, progress=counting(p))
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = {"recipe": loaded.recipe.name, "manifest": str(args.data), **metrics}
    total = metrics.get("latency_ms", {}).get("total")
    budget = loaded.recipe.time_budget_ms
    if total and total["p50"] > budget:
        warnings.append(f"the median image took {total['p50']:.0f} ms here, over the recipe's time budget of {budget} ms: "
                        "on this machine most parts would be timeout rejects")
        print(f"WARNING: {warnings[-1]}", file=sys.stderr)
    if warnings:
        metrics["warnings"] = warnings
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics)
    return 0 if metrics["images"] else 1


def _eval_from_history(args: argparse.Namespace) -> int:
    from station.recipe_validation import ValidationError, table_rows, validate_candidate

    name, _, version = args.recipe.partition("@")
    if not version.isdigit():
        raise _UsageError(f"--from-history compares a stored version: --recipe NAME@VERSION (got {args.recipe!r})")
    src = _history_source(args)
    from station.commands.common import recipes_dir

    try:
        report = validate_candidate(name, int(version), db_url=src["db_url"], archive_dir=src["archive_dir"],
                                    recipes_dir=recipes_dir(src["recipes_dir"]), models_dir=src["models_dir"],
                                    actor="station eval", since=src["since"], until=src["until"], station_id=src["station_id"],
                                    backend=args.backend, threads=args.threads)
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    active = report.get("active")
    print(report["summary"])
    print(f"{'':<32}{'active v' + str(active['version']) if active else 'no active':>18}{'candidate v' + version:>18}")
    for what, a, c in table_rows(report):
        print(f"{what:<32}{a:>18}{c:>18}")
    print("confusion by class (labelled class -> what the candidate made of its images):")
    for truth, became in report["candidate"]["confusion"].items():
        print(f"  {truth:<14}" + ", ".join(f"{k} {n}" for k, n in sorted(became.items())))
    print("activating it would change: " + "; ".join(report["changes"]))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from station.models.train.recipe_training import train_recipe
    except ImportError as exc:
        print(f"error: training needs torch (pip install '.[train]'): {exc}", file=sys.stderr)
        return 1
    from station.vision.dataset import ManifestError

    command = "station " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    if args.from_history and args.learning_curve is not None:
        print("error: --learning-curve goes with --data (a manifest with a part column), not --from-history", file=sys.stderr)
        return 2
    if args.from_history:
        return _usage_errors(_train_from_history, args, command)
    if any(getattr(args, k) is not None for k in ("config", "url", "archive", "since", "until", "station_id", "holdout",
                                                   "base_data")) or args.no_base_data:
        print("error: --config, --db, --archive, --since, --until, --station, --holdout, --base-data and --no-base-data "
              "go with --from-history", file=sys.stderr)
        return 2
    loaded = resolve_recipe(args.recipe, args.recipes_dir)
    out = args.out or DEFAULT_OUT
    if args.learning_curve is not None:
        return _learning_curve(args, loaded, out, command)
    try:
        record = train_recipe(
            loaded, args.data, out, args.work_dir / loaded.recipe.name, args.models_dir or Path("var/models"), args.group_by,
            args.folds, args.seed, args.update_recipe, command, args.cv_mask_source, args.proposal_steps, args.max_escape,
        )
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_record(record)
    print(f"trained {', '.join(record['final']['sha256'])} into {out}"
          + (f"; {loaded.path} now uses them" if args.update_recipe else f" (the recipe {loaded.path} is unchanged)"))
    return 0


def _learning_curve(args: argparse.Namespace, loaded, out: Path, command: str) -> int:
    from station.models.train.learning_curve import format_report, learning_curve, parse_fractions, write_report
    from station.vision.dataset import ManifestError

    if args.update_recipe:
        print("error: --learning-curve trains no model to put in the recipe: drop --update-recipe", file=sys.stderr)
        return 2
    try:
        fractions = parse_fractions(args.learning_curve)
        report = learning_curve(loaded, args.data, args.models_dir or Path("var/models"), args.group_by, args.folds,
                                args.seed, fractions, args.draws, command)
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"report: {write_report(report, out)}")
    return 0


def _print_record(record: dict) -> None:
    cv = record.get("cross_validation")
    if cv:
        print(f"grouped {cv['folds']}-fold cross-validation, pooled over held-out folds:")
        print_metrics(cv["pooled"])
        for key in ("operating_point_one_threshold", "operating_point", "operating_point_per_part", "operating_point_review_band"):
            fitted = cv.get(key)
            if fitted:
                print(f"cross-fitted operating point ({fitted['rule']}):")
                for k, t in enumerate(fitted["thresholds"], 1):
                    band = fitted.get("review_thresholds")
                    print(f"  fold {k} thresholds: " + ", ".join(f"{c} {v:g}" for c, v in t.items())
                          + (f"; review above {band[k - 1]:.3f}" if band else ""))
                print_metrics(fitted["pooled"])
    point = record.get("operating_point")
    if point:
        print(f"operating point: min_confidence {point['min_confidence']}"
              + (f", review_at {point.get('review_at')}" if "review_at" in point else ""))


def _train_from_history(args: argparse.Namespace, command: str) -> int:
    from station.commands.common import recipes_dir
    from station.models.train.history_training import NotEnoughLabels, train_candidate

    if args.data is not None or args.update_recipe:
        raise _UsageError("--from-history writes a candidate version: no --data or --update-recipe")
    src = _history_source(args)
    if args.out is not None:
        src["models_dir"] = args.out
    loaded = resolve_recipe(args.recipe, recipes_dir(src["recipes_dir"]))
    try:
        cand = train_candidate(loaded, src["db_url"], src["archive_dir"], src["models_dir"], args.work_dir,
                               since=src["since"], until=src["until"], station_id=src["station_id"], folds=args.folds,
                               holdout=DEFAULT_HOLDOUT if args.holdout is None else args.holdout, seed=args.seed,
                               max_escape=args.max_escape, proposal_steps=args.proposal_steps,
                               cv_mask_source=args.cv_mask_source, command=command, base_data=args.base_data,
                               base_group_by=args.group_by, use_base_data=not args.no_base_data)
    except (NotEnoughLabels, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_record(cand.record)
    h = cand.record["history"]
    v = cand.version
    print(f"candidate {v.name} v{v.version} stored in the history database (trained on {len(h['trained_on'])} reviewed parts, "
          f"{len(h['held_out'])} held out); models and record in {src['models_dir']} ({cand.record_path.name}). "
          f"The line still runs {loaded.recipe.name} v{loaded.recipe.version}: validate with "
          f"`station eval --recipe {v.name}@{v.version} --from-history`, activate on the HMI's recipe page.")
    return 0
