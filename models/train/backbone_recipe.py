"""`station train` for a recipe whose analyzer is ``"backbone"``: its per-cell head, with grouped
cross-validation, through the same evaluation as `station eval`.

1. Every usable manifest view runs once through the recipe's backbone (pulled into the models
   directory if missing) at the recipe's ``short_side``; the feature maps are kept for all folds.
2. With ``folds`` > 1: for each grouped fold (rows sharing ``group_by`` stay together) a head is
   trained on the other folds' features (models/train/backbone_head.py), written into the fold's
   work directory next to a link to the backbone, and the held-out rows are inspected by the real
   inspector (station.vision.evaluate: what `station eval` runs). Metrics per fold, pooled, and
   cross-fitted at the 1 % operating point (one threshold, chosen on the other folds).
3. The head is trained on all rows as ``<prefix>-backbone-head`` into ``out_dir`` with a record
   ``<prefix>.record.json`` (data, command, metrics; the prefix is the recipe's name unless given,
   e.g. ``<recipe>-v<N>`` for a candidate trained from history); with ``update_recipe`` the
   recipe's ``vision.head`` and ``min_confidence`` (from the pooled held-out folds) are updated.
   The backbone is not copied: the head's metadata names the backbone's sha256 it was trained on.

The head is the only model trained here: a recipe that names a classifier is refused (its
training on backbone features is not built yet), so no figure mixes held-out and in-sample models.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from station.inference.factory import load_model
from station.models_store import pull
from station.models.train.backbone_head import HeadSettings, backbone_features, train_head, view_labels, write_head
from station.models.train.recipe_training import (
    _line,
    _write_held_out,
    choose_operating_point,
    evaluate_fold,
    link_pulled,
    training_data,
)
from station.recipe import BackboneVision, LoadedRecipe, Recipe
from station.recipe_file import recipe_text, write_atomically
from station.recipe_models import recipe_models
from station.vision.backbone import Backbone
from station.vision.dataset import grouped_folds
from station.vision.evaluate import cross_fitted, summarise

log = logging.getLogger("station.train")

SOURCE = "station train (models/train/backbone_recipe.py)"


def head_recipe(recipe: Recipe, head: str, min_confidence: float | None = None, review_at: float | None = None,
                set_review: bool = False) -> Recipe:
    """``recipe`` with its vision.head replaced (and one ``min_confidence`` for all classes; with
    ``set_review``, one ``review_at`` too, None meaning no band)."""
    update: dict = {"vision": recipe.vision.model_copy(update={"head": head})}
    if min_confidence is not None:
        update["min_confidence"] = min_confidence
        update["classes"] = [c.model_copy(update={"min_confidence": None}) for c in recipe.classes]
    if set_review:
        update["review_at"] = review_at
        update["classes"] = [c.model_copy(update={"review_at": None}) for c in update.get("classes", recipe.classes)]
    return Recipe.model_validate(recipe.model_copy(update=update).model_dump(by_alias=True))


def check_trainable(recipe: Recipe, cv_mask_source: str | None = None, proposal_steps: int | None = None) -> None:
    """ValueError (one line) for a backbone recipe whose models `station train` cannot train, or
    options that are not for it (not silently ignored)."""
    if cv_mask_source is not None or proposal_steps is not None:
        raise ValueError(f"recipe {recipe.name}: --cv-mask-source and --proposal-steps are for proposal nets; "
                         "a backbone recipe trains its head only")
    if recipe.vision.classifier:
        raise ValueError(f"recipe {recipe.name}: station train trains a backbone recipe's head only; "
                         f"remove vision.classifier ({recipe.vision.classifier}) or train it separately")


def trained_head_recipe(recipe: Recipe, record: dict) -> Recipe:
    """The recipe that uses the head of ``record`` (``train_backbone_recipe``'s) at its operating point."""
    chosen = record.get("operating_point", {})
    return head_recipe(recipe, record["final"]["head"], chosen.get("min_confidence"), chosen.get("review_at"),
                       "review_chosen_on" in chosen)


def train_backbone_recipe(loaded: LoadedRecipe, manifest: Path, out_dir: Path, work_dir: Path, models_dir: Path,
                          group_by: str | None = None, folds: int = 3, seed: int = 0, update_recipe: bool = True,
                          command: str = "", max_escape: float | None = None, prefix: str | None = None) -> dict:
    """Cross-validate (folds > 1), train the final head, write the record. Returns the record."""

    recipe = loaded.recipe
    prefix = prefix or recipe.name
    vision: BackboneVision = recipe.vision
    check_trainable(recipe)
    classes = [c.name for c in recipe.classes]
    samples, data = training_data(manifest, recipe, group_by)
    if not samples:
        raise ValueError(f"{manifest}: no usable rows")
    pull(vision.backbone, models_dir)
    backbone = Backbone(load_model(models_dir, vision.backbone, "onnxruntime", 0))
    settings = HeadSettings(short_side=vision.short_side, flip_tta=False, seed=seed)
    record: dict = {
        "recipe": recipe.name,
        "command": command,
        "data": data,
        "seed": seed,
        "backbone": {"name": vision.backbone, "sha256": backbone.sha256, "short_side": vision.short_side},
        "head_settings": {"c": settings.c, "flip_tta": settings.flip_tta, "edge_margin_cells": vision.edge_margin_cells,
                          "outline_at_peak": vision.outline_at_peak},  # the held-out IoU depends on it
    }
    t0 = time.monotonic()
    feats = backbone_features(samples, backbone, settings, recipe.preprocess)
    record["feature_seconds"] = round(time.monotonic() - t0, 1)
    labels = view_labels(samples, classes, recipe.good_class)
    if folds > 1:
        fold_idx = grouped_folds([s.row for s in samples], folds, group_by, seed)
        fold_metrics, pooled, by_fold = [], [], []
        for k, held in enumerate(fold_idx, 1):
            t = time.monotonic()
            held_set = set(held)
            train = [i for i in range(len(samples)) if i not in held_set]
            fold_dir = work_dir / f"fold{k}"
            head, info = train_head([samples[i] for i in train], [labels[i] for i in train], len(classes),
                                    [feats[i] for i in train], settings)
            name = f"{prefix}-fold{k}-backbone-head"
            write_head(head, fold_dir, name, classes, backbone, settings, info, SOURCE, recipe.preprocess)
            fold_recipe = head_recipe(recipe, name)
            for needed in (vision.backbone, recipe_models(fold_recipe).segmentation):  # the SAM pair when a class is outlined by it
                if needed:
                    link_pulled(models_dir, fold_dir, needed)
            fold_loaded = LoadedRecipe(recipe=fold_recipe, path=loaded.path, text=loaded.text, content_hash=loaded.content_hash)
            metrics, results = evaluate_fold(fold_loaded, fold_dir, [samples[i].row for i in held], group_by, info, t,
                                             f"{k}/{folds}")
            fold_metrics.append(metrics)
            pooled += results
            by_fold.append(results)
        pooled_metrics = summarise(pooled, [], recipe.good_class, bool(group_by))
        pooled_metrics.pop("skipped_rows", None)
        _write_held_out(work_dir / "held_out.json", by_fold)
        one = cross_fitted(by_fold, recipe.good_class, bool(group_by))
        record["cross_validation"] = {"folds": folds, "pooled": pooled_metrics, "per_fold": fold_metrics,
                                      "operating_point_one_threshold": one}
        if group_by:
            record["cross_validation"]["operating_point_per_part"] = cross_fitted(by_fold, recipe.good_class, True, per_part=True)
        choose_operating_point(record, by_fold, pooled, recipe.good_class, classes, group_by, max_escape)
        print("pooled held-out: " + _line(pooled_metrics), file=sys.stderr, flush=True)
        print("pooled held-out, cross-fitted 1 % operating point, one threshold: " + _line(one["pooled"]), file=sys.stderr, flush=True)
    head, info = train_head(samples, labels, len(classes), feats, settings)
    name = f"{prefix}-backbone-head"
    meta = write_head(head, out_dir, name, classes, backbone, settings, info, SOURCE, recipe.preprocess)
    record["final"] = {"head": name, "train_info": info, "sha256": {name: meta.sha256}}
    record["trained_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out_dir / f"{prefix}.record.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if update_recipe:
        new = trained_head_recipe(recipe, record)
        write_atomically(loaded.path, recipe_text(new, loaded.path.read_text(encoding="utf-8")))
    return record


__all__ = ["train_backbone_recipe", "head_recipe", "trained_head_recipe", "check_trainable"]
