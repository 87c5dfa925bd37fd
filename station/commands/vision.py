"""`station train` and `station eval`: the recipe's models from labelled images, and their scores."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from station.commands.common import resolve_recipe
from station.paths import TRAINED_DIR


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a recipe's proposal stage and classifier from a manifest CSV (needs the train extra)")
    p.add_argument("--recipe", required=True, help="recipe name (in --recipes-dir) or path to a .toml")
    p.add_argument("--data", required=True, type=Path, help="manifest CSV: image, mask, class, extra columns")
    p.add_argument("--group-by", help="column whose rows are one part (e.g. tile_group): folds never split it")
    p.add_argument("--folds", type=int, default=5, help="grouped cross-validation folds before the final training (0/1: none)")
    p.add_argument("--out", type=Path, default=TRAINED_DIR, help="where the trained models and record go")
    p.add_argument("--work-dir", type=Path, default=Path("var/train"), help="fold models (not committed)")
    p.add_argument("--models-dir", type=Path, default=Path("var/models"), help="SAM models for the fold evaluations")
    p.add_argument("--recipes-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-update-recipe", action="store_true", help="leave the recipe's [models] and min_confidence as they are")
    p.add_argument("--cv-mask-source", choices=["sam", "proposal"],
                   help="outline every class this way in the CV folds (proposal: no SAM encoder runs, much faster)")
    p.add_argument("--proposal-steps", type=int, default=None, metavar="N",
                   help="training steps of a U-Net proposal stage (recipe vision.proposal_net = \"unet\"; default 2500: ~8 min on 2 cores)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="inspect every image of a manifest and report detection, false rejects, type accuracy, IoU")
    p.add_argument("--recipe", required=True)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--group-by", help="column whose rows are the views of one part: also part-level rates")
    p.add_argument("--json", action="store_true", help="one JSON object with the metrics at top level")
    p.add_argument("--models-dir", type=Path, default=Path("var/models"))
    p.add_argument("--recipes-dir", type=Path, default=None)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    p.set_defaults(func=cmd_eval)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def print_metrics(m: dict) -> None:
    keys = ["detection_rate", "false_reject_rate", "type_accuracy", "mean_iou", "part_detection_rate", "part_false_reject_rate",
            "auroc", "detection_at_1pct_false_reject", "threshold_at_1pct_false_reject"]
    for k in keys:
        if k in m:
            print(f"{k:<32}{_fmt(m[k])}")
    counts = f"images {m['images']} (defective {m['defective_images']}, good {m['good_images']}, with masks {m['images_with_masks']})"
    if "parts" in m:
        counts += f"  parts {m['parts']} (defective {m['defective_parts']}, good {m['good_parts']})"
    print(counts)
    print(f"skipped {m['skipped']}" + (": " + ", ".join(f"{k} {v}" for k, v in m["skipped_reasons"].items()) if m["skipped"] else ""))
    for s in m.get("skipped_rows", []):
        print(f"  row {s['row']}: {s['reason']}")
    print(f"{'class':<14}{'images':>7}{'rejected':>9}{'type acc':>9}{'IoU':>8}")
    for cls, e in m["per_class"].items():
        print(f"{cls:<14}{e['images']:>7}{e['rejected']:>9}{_fmt(e.get('type_accuracy')):>9}{_fmt(e.get('mean_iou')):>8}")
    print(f"{'stage':<12}{'p50 ms':>10}{'p99 ms':>10}")
    for stage, lat in m["latency_ms"].items():
        print(f"{stage:<12}{lat['p50']:>10.1f}{lat['p99']:>10.1f}")


def cmd_eval(args: argparse.Namespace) -> int:
    from station.inference.metadata import ModelError
    from station.models_store import ensure_recipe_models
    from station.vision.dataset import ManifestError, read_manifest
    from station.vision.evaluate import evaluate
    from station.vision.inspector import build_inspector

    loaded = resolve_recipe(args.recipe, args.recipes_dir)
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
    try:
        metrics, _ = evaluate(inspector, loaded, rows, args.group_by)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = {"recipe": loaded.recipe.name, "manifest": str(args.data), **metrics}
    total = metrics.get("latency_ms", {}).get("total")
    budget = loaded.recipe.time_budget_ms
    if total and total["p50"] > budget:
        warning = (f"the median image took {total['p50']:.0f} ms here, over the recipe's time budget of {budget} ms: "
                   "on this machine most parts would be timeout rejects")
        metrics["warnings"] = [warning]
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics)
    return 0 if metrics["images"] else 1


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from station.models.train.recipe_training import train_recipe
    except ImportError as exc:
        print(f"error: training needs torch (pip install '.[train]'): {exc}", file=sys.stderr)
        return 1
    from station.vision.dataset import ManifestError

    loaded = resolve_recipe(args.recipe, args.recipes_dir)
    command = "station " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    try:
        record = train_recipe(
            loaded, args.data, args.out, args.work_dir / loaded.recipe.name, args.models_dir, args.group_by,
            args.folds, args.seed, not args.no_update_recipe, command, args.cv_mask_source, args.proposal_steps,
        )
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cv = record.get("cross_validation")
    if cv:
        print(f"grouped {cv['folds']}-fold cross-validation, pooled over held-out folds:")
        print_metrics(cv["pooled"])
        for key in ("operating_point_one_threshold", "operating_point", "operating_point_per_part"):
            fitted = cv.get(key)
            if fitted:
                print(f"cross-fitted operating point ({fitted['rule']}):")
                for k, t in enumerate(fitted["thresholds"], 1):
                    print(f"  fold {k} thresholds: " + ", ".join(f"{c} {v:.3f}" for c, v in t.items()))
                print_metrics(fitted["pooled"])
    final = record["final"]
    proposals = ", ".join(n for n in final["sha256"] if n != final["classifier"])
    print(f"trained {proposals} and {final['classifier']} into {args.out}")
    return 0
