"""`station train --learning-curve`: would more labelled parts help a backbone recipe, and how much?

The recipe's grouped folds (``grouped_folds``, what `station train` cross-validates on); for each
fraction, each fold's head is trained on that share of its training parts (whole parts, drawn per
class, ``draws`` times with different draws) and scores the **whole** held-out fold, so every
point is judged on the same parts. The backbone runs once per view; heads are trained as
`station train` trains them (models/train/backbone_head.py, the recipe's short side and seed).

Scores come straight from the head's cells, as the inspector's region confidence does: a view
scores its most defective cell (outside the recipe's edge margin), a part its most defective
view. No SAM run and no verdict rules: a curve of the ranking and of the detection at the 1 %
point, not of the station's full verdict (`station train` measures that, through the inspector,
at the full set). Per point: image AUROC (pooled and per fold), part AUROC, and detection at
<= 1 % good images, cross-fitted (fold k judged at the threshold that rejects at most 1 % of the
other folds' good images) with its false rejects.

Nothing is written but the report (``<out>/<recipe>.learning-curve.json``); no model is kept.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from station.inference.factory import load_model
from station.models.train.backbone_head import CellHead, HeadSettings, backbone_features, train_head, view_labels
from station.models.train.recipe_training import training_data
from station.models_store import pull
from station.recipe import BackboneVision, LoadedRecipe
from station.vision.backbone import Backbone, BackboneFeatures, BackboneProposer
from station.vision.dataset import grouped_folds, group_of
from station.vision.evaluate import auroc, score_threshold, wilson_interval

log = logging.getLogger("station.train")


def parse_fractions(text: str) -> list[float]:
    """``"0.25,0.5,0.75"`` -> [0.25, 0.5, 0.75, 1.0]: sorted, each in (0, 1], the full set always
    included (the curve's end point is the figure `station train` reports)."""
    try:
        values = {float(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise ValueError(f"--learning-curve {text!r}: give fractions of the training parts, e.g. 0.25,0.5,0.75") from None
    bad = sorted(v for v in values if not 0 < v <= 1)
    if bad or not values:
        raise ValueError(f"--learning-curve {text!r}: every fraction must lie in (0, 1]" + (f" (not {bad})" if bad else ""))
    return sorted(values | {1.0})


def training_subset(train: list[int], groups: list[str], labels: list[int], fraction: float,
                    rng: np.random.Generator) -> list[int]:
    """The rows of ``train`` whose part is among ``fraction`` of the parts, drawn per class (a
    part's class: its views' defect label, good when none), at least one part of each class;
    all of them at 1.0."""
    part_class: dict[str, int] = defaultdict(int)
    for i in train:
        part_class[groups[i]] = max(part_class[groups[i]], labels[i])
    by_class: dict[int, list[str]] = defaultdict(list)
    for part in sorted(part_class):
        by_class[part_class[part]].append(part)
    keep: set[str] = set()
    for parts in by_class.values():
        n = len(parts) if fraction >= 1 else max(1, round(fraction * len(parts)))
        keep.update(rng.choice(parts, n, replace=False).tolist() if n < len(parts) else parts)
    return [i for i in train if groups[i] in keep]


def curve_point(scores: np.ndarray, defective: np.ndarray, groups: list[str], folds: list[list[int]],
                max_false_reject: float = 0.01) -> dict:
    """Ranking and cross-fitted 1 % point of held-out ``scores`` (one per view, each from the
    head that did not train on it)."""
    fold_auroc = [auroc(scores[f][defective[f]], scores[f][~defective[f]]) for f in map(np.asarray, folds)]
    parts: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        parts[g].append(i)
    part_scores = np.array([scores[v].max() for v in parts.values()])
    part_bad = np.array([defective[v].any() for v in parts.values()])
    found = rejected = 0
    for held in folds:
        held_set = set(held)
        others_good = np.array([scores[i] for i in range(len(scores)) if i not in held_set and not defective[i]])
        threshold = score_threshold(others_good, max_false_reject)
        h = np.asarray(held)
        found += int((scores[h][defective[h]] > threshold).sum())
        rejected += int((scores[h][~defective[h]] > threshold).sum())
    n_bad, n_good = int(defective.sum()), int((~defective).sum())
    return {
        "auroc": auroc(scores[defective], scores[~defective]),
        "fold_auroc": fold_auroc,
        "part_auroc": auroc(part_scores[part_bad], part_scores[~part_bad]),
        "detection_at_1pct_false_reject": found / n_bad if n_bad else None,
        "false_reject_rate": rejected / n_good if n_good else None,
        "false_reject_interval": wilson_interval(rejected, n_good),
    }


def head_scores(head: CellHead, features: list[BackboneFeatures], edge_cells: int) -> np.ndarray:
    """Each view's defect log-odds from the head's cells (``BackboneProposer.view_score``)."""
    out = []
    with torch.no_grad():
        for f in features:
            maps = {k: torch.from_numpy(v.astype(np.float32)) for k, v in f.maps.items()}
            probs = head(maps["s8"], maps["s16"], maps["s32"])[0].numpy()
            out.append(BackboneProposer.view_score(probs, edge_cells))
    return np.asarray(out)


def learning_curve(loaded: LoadedRecipe, manifest: Path, models_dir: Path, group_by: str | None, folds: int,
                   seed: int, fractions: list[float], draws: int, command: str = "") -> dict:
    """The report (see the module doc)."""
    recipe = loaded.recipe
    vision = recipe.vision
    if not isinstance(vision, BackboneVision):
        raise ValueError(f"recipe {recipe.name}: --learning-curve needs a backbone recipe (vision.analyzer = \"backbone\"), "
                         f"not {vision.analyzer!r}")
    if folds < 2:
        raise ValueError("--learning-curve needs --folds 2 or more (each point is judged on held-out folds)")
    if draws < 1:
        raise ValueError("--draws must be 1 or more")
    classes = [c.name for c in recipe.classes]
    samples, data = training_data(manifest, recipe, group_by)
    if not samples:
        raise ValueError(f"{manifest}: no usable rows")
    labels = view_labels(samples, classes, recipe.good_class)
    defective = np.array([label > 0 for label in labels])
    if defective.all() or not defective.any():
        raise ValueError(f"{manifest}: a learning curve needs good and defective views (AUROC, the 1 % point)")
    pull(vision.backbone, models_dir)
    backbone = Backbone(load_model(models_dir, vision.backbone, "onnxruntime", 0))
    settings = HeadSettings(short_side=vision.short_side, flip_tta=False, seed=seed)
    feats = backbone_features(samples, backbone, settings, recipe.preprocess)
    groups = [group_of(s.row, group_by) for s in samples]
    fold_idx = grouped_folds([s.row for s in samples], folds, group_by, seed)
    points = []
    for fraction in fractions:
        for draw in range(1 if fraction >= 1 else draws):
            rng = np.random.default_rng([seed, draw])
            scores = np.full(len(samples), np.nan)
            trained_parts = []
            t0 = time.monotonic()
            for held in fold_idx:
                held_set = set(held)
                train = training_subset([i for i in range(len(samples)) if i not in held_set], groups, labels, fraction, rng)
                head, _ = train_head([samples[i] for i in train], [labels[i] for i in train], len(classes),
                                     [feats[i] for i in train], settings)
                scores[held] = head_scores(head, [feats[i] for i in held], vision.edge_margin_cells)
                trained_parts.append(len({groups[i] for i in train}))
            point = {"fraction": fraction, "draw": draw, "trained_parts_per_fold": trained_parts,
                     **curve_point(scores, defective, groups, fold_idx)}
            log.info("learning curve: fraction %.2f draw %d: AUROC %.3f, detection at 1 %% %.3f (%.0f s)", fraction, draw,
                     point["auroc"], point["detection_at_1pct_false_reject"], time.monotonic() - t0)
            points.append(point)
    return {"recipe": recipe.name, "command": command, "data": data, "folds": folds, "seed": seed,
            "backbone": {"name": vision.backbone, "sha256": backbone.sha256, "short_side": vision.short_side},
            "edge_margin_cells": vision.edge_margin_cells, "points": points}


def summary_rows(report: dict) -> list[dict]:
    """One row per fraction: the mean over its draws and their range."""
    by_fraction: dict[float, list[dict]] = defaultdict(list)
    for p in report["points"]:
        by_fraction[p["fraction"]].append(p)
    rows = []
    for fraction, pts in sorted(by_fraction.items()):
        row = {"fraction": fraction, "draws": len(pts), "trained_parts_per_fold": pts[0]["trained_parts_per_fold"]}
        for key in ("auroc", "part_auroc", "detection_at_1pct_false_reject", "false_reject_rate"):
            values = [p[key] for p in pts if p[key] is not None]
            row[key] = (float(np.mean(values)), float(min(values)), float(max(values))) if values else None
        rows.append(row)
    return rows


def format_report(report: dict) -> str:
    lines = [f"learning curve of {report['recipe']} ({report['backbone']['name']} at short side "
             f"{report['backbone']['short_side']}), {report['folds']} grouped folds, scores from the head's cells:",
             f"{'fraction':>8} {'parts/fold':>14} {'draws':>5}  {'image AUROC':>19}  {'part AUROC':>19}  "
             f"{'detection at 1 %':>19}  {'false rejects':>13}"]

    def cell(v):
        return "n/a".rjust(19) if v is None else f"{v[0]:.3f} [{v[1]:.3f}-{v[2]:.3f}]"

    for r in summary_rows(report):
        fr = r["false_reject_rate"]
        lines.append(f"{r['fraction']:>8.2f} {'/'.join(map(str, r['trained_parts_per_fold'])):>14} {r['draws']:>5}  "
                     f"{cell(r['auroc'])}  {cell(r['part_auroc'])}  {cell(r['detection_at_1pct_false_reject'])}  "
                     f"{'n/a' if fr is None else f'{fr[0]:.3f}':>13}")
    lines.append("(mean [min-max] over the draws of training parts; every point judged on the whole held-out folds)")
    return "\n".join(lines)


def write_report(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report['recipe']}.learning-curve.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path
