"""`station train`: train a recipe's proposal stage and classifier, with grouped cross-validation.

1. Read the manifest; unusable rows are skipped with their reason.
2. With ``folds`` > 1: for each of k grouped folds (rows sharing ``group_by`` stay together),
   train on the other folds, export, and run ``station eval``'s code path (the real inspector,
   ONNX Runtime) on the held-out fold. Metrics per fold and pooled over the held-out folds.
3. Train on all rows, export ``<prefix>-proposals`` and ``<prefix>-classifier`` (the prefix is
   the recipe's name unless given) with metadata (classes, input, normalisation, sha256) into
   ``out_dir`` and write a record (data, command, metrics) next to them. The recipe file is
   rewritten to use them only when asked (``update_recipe``); ``trained_recipe_of`` gives the
   trained recipe from the record (a candidate version, station.models.train.history_training).

With ``max_escape`` the record also holds a review band (``review_at``) chosen, like the
operating point, on the pooled held-out folds and cross-fitted: the highest review threshold
at which at most that share of the defective images (and parts, with ``group_by``) escape.
"""

from __future__ import annotations

import hashlib
import json
import math
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from station.models.train.classifier import SIZE, export_classifier, train_classifier
from station.models.train.nets import ProposalNet
from station.models.train.proposal_net import STEPS as PROPOSAL_NET_STEPS
from station.models.train.proposal_net import export_proposal_net, train_proposal_net
from station.models.train.proposals import export_proposals, sample_pixels, train_pixel_mlp
from station.models.train.sam_head import (
    HEADS,
    encode_views,
    encoded_samples,
    export_sam_head,
    train_sam_head,
)
from station.inference.metadata import InputSpec, ModelMetadata, sha256_file
from station.inference.onnx import OnnxModel
from station.progress import counting, step
from station.recipe import BackboneVision, LoadedRecipe, ProposalEntry, Recipe
from station.recipe_file import recipe_text, write_atomically
from station.recipe_models import recipe_models
from station.vision.classifier import NOT_DEFECT
from station.vision.crops import region_crop
from station.vision.dataset import (
    Sample,
    grouped_folds,
    load_samples,
    read_manifest,
    skip_summary,
)
from station.vision.evaluate import (
    ImageResult,
    cross_fitted,
    evaluate,
    operating_point,
    review_threshold_for,
    summarise,
    threshold_for,
)
from station.vision.features import FEATURE_SET, pixel_features
from station.vision.trained_on import image_hash
from station.vision.preprocess import to_gray
from station.vision.proposals import BACKGROUND, ProposalStage, proposer
from station.vision.regions import components
from station.vision.segmentation import EncodedView, SamSegmenter

log = logging.getLogger("station.train")

PROPOSALS_PER_IMAGE = 8
MAX_NEGATIVES_PER_POSITIVE = 2  # cap on not-a-defect crops, so training time stays bounded
GT_JITTERS = 2


def _write_metadata(path: Path, name: str, role: str, classes: list[str], input_spec: InputSpec | None, extra: dict,
                    source: str) -> ModelMetadata:
    meta = ModelMetadata(
        name=name, role=role, file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size,
        input=input_spec, classes=classes, extra=extra, source=source,
    )
    meta.write(path.parent / f"{name}.json")
    return meta


def feature_cache(samples: list[Sample]) -> dict[int, np.ndarray]:
    """Filter-bank features of every sample, float16, by manifest row (computed once for all folds)."""
    return {s.row.index: pixel_features(to_gray(s.image)).astype(np.float16) for s in samples}


def train_pair(samples: list[Sample], recipe: Recipe, out_dir: Path, prefix: str, seed: int = 0,
               threshold: float | None = None, features: dict[int, np.ndarray] | None = None,
               proposal_steps: int | None = None, views: dict[int, EncodedView] | None = None,
               encoder_sha256: str | None = None) -> tuple[list[ProposalEntry], str, dict]:
    """Train and export the recipe's proposal net(s) (one per ``vision.proposals`` entry, of its
    kind) and the classifier from ``samples``; returns (the proposal entries naming the new
    models, classifier name, info). Several proposal nets are trained each on its own; the
    classifier learns from what their combination finds. A proposal stage on SAM embeddings
    ("sam-head", "sam-context-head") needs ``views`` (every sample encoded, `encode_views`) and
    the encoder's sha256."""
    features = features if features is not None else {}

    def feats(s: Sample) -> np.ndarray:
        f = features.get(s.row.index)
        return pixel_features(to_gray(s.image)) if f is None else f.astype(np.float32)

    out_dir.mkdir(parents=True, exist_ok=True)
    classes = [c.name for c in recipe.classes]
    threshold = recipe.vision.proposal_threshold if threshold is None else threshold
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    labels = [0 if s.row.label == recipe.good_class else classes.index(s.row.label) + 1 for s in samples]
    nets = [e.kind for e in recipe.vision.proposals]
    source = "station train (models/train/recipe_training.py)"
    stages, prop_names, pixel_counts, seconds = {}, {}, None, {}
    for net in nets:
        t = time.monotonic()
        prop_name = f"{prefix}-proposals" if len(nets) == 1 else f"{prefix}-proposals-{net}"
        prop_path = out_dir / f"{prop_name}.onnx"
        extra, counts = _train_proposal_stage(net, samples, labels, len(classes), prop_path, seed, rng, feats,
                                              proposal_steps, views, encoder_sha256)
        if extra.get("input") == "sam_embedding":
            extra["encoder"] = recipe.vision.segmentation
        pixel_counts = counts if counts is not None else pixel_counts
        meta = _write_metadata(prop_path, prop_name, "proposals", [BACKGROUND] + classes,
                               InputSpec(size=256, channels=1, resize="stretch", normalization="scale"), extra, source)
        stages[net] = ProposalStage(OnnxModel(prop_path, meta), classes)
        prop_names[net] = prop_name
        seconds[net] = round(time.monotonic() - t, 1)
    t_prop = time.monotonic() - t0
    # classifier examples: true regions, and what the trained proposal stage finds on the training images
    stage = proposer([[stages[e.kind] for e in opinion] for opinion in recipe.vision.opinions])
    crops, labels = [], []
    not_defect = len(classes)
    for s in samples:
        grey = to_gray(s.image)
        truth = s.mask if s.mask is not None else np.zeros(grey.shape, bool)
        is_defect = s.row.label != recipe.good_class
        if is_defect and truth.any():
            for region in components(truth, 2):
                for _ in range(GT_JITTERS):
                    ctx = float(rng.uniform(0.3, 0.9))
                    crops.append(region_crop(grey, region.mask, region.box, SIZE, ctx))
                    labels.append(classes.index(s.row.label))
        for p in stage.find(grey, threshold, PROPOSALS_PER_IMAGE, features=feats(s) if stage.feature_input else None,
                            encoded=views[s.row.index] if stage.embedding_input else None,
                            edge_margin_px=recipe.vision.edge_margin_px):
            hit = is_defect and bool((p.mask & truth).any())
            crops.append(region_crop(grey, p.mask, p.box, SIZE))
            labels.append(classes.index(s.row.label) if hit else not_defect)
    crop_arr, label_arr = np.stack(crops), np.array(labels, np.int64)
    neg = np.flatnonzero(label_arr == not_defect)
    cap = MAX_NEGATIVES_PER_POSITIVE * max(1, len(label_arr) - len(neg))
    if len(neg) > cap:  # keep a random subset of the negatives (hardest ones are not known yet)
        keep = np.concatenate([np.flatnonzero(label_arr != not_defect), rng.choice(neg, cap, replace=False)])
        crop_arr, label_arr = crop_arr[keep], label_arr[keep]
    clf = train_classifier(crop_arr, label_arr, len(classes), seed=seed)
    clf_name = f"{prefix}-classifier"
    clf_path = out_dir / f"{clf_name}.onnx"
    export_classifier(clf, clf_path)
    _write_metadata(clf_path, clf_name, "classifier", classes + [NOT_DEFECT],
                    InputSpec(size=SIZE, channels=2, resize="stretch", normalization="scale"),
                    {"crop_context": 0.5, "channels": ["grey 0..1", "region mask"]}, source)
    info = {
        "proposals": [{"kind": e.kind, "opinion": e.opinion} for e in recipe.vision.proposals],
        **({"pixel_class_counts": pixel_counts} if pixel_counts else {}),
        "classifier_examples": len(label_arr),
        "classifier_class_counts": np.bincount(label_arr, minlength=len(classes) + 1).tolist(),
        "seconds": {"proposals": round(t_prop, 1), **({"per_net": seconds} if len(nets) > 1 else {}),
                    "total": round(time.monotonic() - t0, 1)},
    }
    return [e.model_copy(update={"model": prop_names[e.kind]}) for e in recipe.vision.proposals], clf_name, info


def _train_proposal_stage(net: str, samples: list[Sample], labels: list[int], n_classes: int, path: Path, seed: int,
                          rng: np.random.Generator, feats, proposal_steps: int | None,
                          views: dict[int, EncodedView] | None, encoder_sha256: str | None) -> tuple[dict, list[int] | None]:
    """Train one proposal net and export it to ``path``; (metadata extra, pixel class counts or None)."""
    if net in HEADS:
        if views is None or not encoder_sha256:
            raise ValueError(f"a {net} proposal stage is trained on the views' SAM embeddings: pass views and encoder_sha256")
        encoded = encoded_samples(samples, labels, views)
        channels, grid = encoded[0].embedding.shape[0], encoded[0].embedding.shape[-1]
        export_sam_head(train_sam_head(encoded, n_classes, seed=seed, kind=net), path, channels, grid)
        what = "per-location head" if net == "sam-head" else "head with dilated 3x3 context"
        return {"input": "sam_embedding", "encoder_sha256": encoder_sha256,
                "channels": channels, "grid": grid, "net": net,
                "note": f"{what} on the SAM encoder's embedding of the whole view; static shape"}, None
    if net == "unet":
        export_proposal_net(train_proposal_net(samples, labels, n_classes, seed=seed, steps=proposal_steps), path)
        return {"input": "grey", "stride": ProposalNet.STRIDE, "net": "unet",
                "note": "fully convolutional: any H, W (padded to the stride); input is the grey view 0..1"}, None
    xs, ys = [], []
    for s, label in zip(samples, labels):
        x, y = sample_pixels(s, label, rng, feats(s))
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    export_proposals(train_pixel_mlp(x, y, n_classes, seed=seed), path)
    return ({"feature_set": FEATURE_SET, "net": "pixel-mlp", "note": "fully convolutional: any H, W; input is the feature map"},
            np.bincount(y, minlength=n_classes + 1).tolist())


def _write_held_out(path: Path, by_fold: list[list[ImageResult]]) -> None:
    """Every held-out image's scores, for analysis after the run (work dir, not committed)."""
    rows = [{"fold": k, "image": str(r.row.image), "group": r.group, "truth": r.truth, "score": r.score,
             "class_scores": r.class_scores, "top_class": r.top_class, "iou": r.iou}
            for k, results in enumerate(by_fold, 1) for r in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows) + "\n", encoding="utf-8")


def trained_recipe(recipe: Recipe, proposals: list[ProposalEntry], classifier: str, mask_source: str | None = None,
                   min_confidence: float | None = None, review_at: float | None = None) -> Recipe:
    """``recipe`` with its proposal entries and classifier replaced by trained ones, optionally
    every class outlined one way (``mask_source``), one ``min_confidence`` for all classes and
    one review band (``review_at``) for all classes."""
    update: dict = {"vision": recipe.vision.model_copy(update={"proposals": proposals, "classifier": classifier})}
    if mask_source:
        update["classes"] = [c.model_copy(update={"mask_source": mask_source}) for c in recipe.classes]
    if min_confidence is not None:
        update["min_confidence"] = min_confidence
        update["classes"] = [c.model_copy(update={"min_confidence": None}) for c in update.get("classes", recipe.classes)]
    if review_at is not None:
        update["review_at"] = review_at
        update["classes"] = [c.model_copy(update={"review_at": None}) for c in update.get("classes", recipe.classes)]
    return Recipe.model_validate(recipe.model_copy(update=update).model_dump(by_alias=True))


def trained_recipe_of(recipe: Recipe, record: dict) -> Recipe:
    """The recipe that uses the models of ``record`` (``train_recipe``'s) at its operating point."""
    if isinstance(recipe.vision, BackboneVision):
        from station.models.train.backbone_recipe import trained_head_recipe

        return trained_head_recipe(recipe, record)
    final, point = record["final"], record.get("operating_point", {})
    proposals = [ProposalEntry(**e) for e in final["proposals"]]
    return trained_recipe(recipe, proposals, final["classifier"], min_confidence=point.get("min_confidence"),
                          review_at=point.get("review_at"))


def train_recipe(loaded: LoadedRecipe, manifest: Path, out_dir: Path, work_dir: Path, models_dir: Path,
                 group_by: str | None = None, folds: int = 5, seed: int = 0, update_recipe: bool = False,
                 command: str = "", cv_mask_source: str | None = None, proposal_steps: int | None = None,
                 max_escape: float | None = None, prefix: str | None = None) -> dict:
    """Cross-validate (folds > 1), train the final models, write the record. Returns the record."""

    if isinstance(loaded.recipe.vision, BackboneVision):
        from station.models.train.backbone_recipe import check_trainable, train_backbone_recipe

        check_trainable(loaded.recipe, cv_mask_source, proposal_steps)
        return train_backbone_recipe(loaded, manifest, out_dir, work_dir, models_dir, group_by, folds, seed, update_recipe, command,
                                     max_escape, prefix)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    recipe = loaded.recipe
    nets = [e.kind for e in recipe.vision.proposals]
    samples, data = training_data(manifest, recipe, group_by)
    record: dict = {
        "recipe": recipe.name,
        "command": command,
        "data": data,
        "seed": seed,
        **({"proposal_steps": proposal_steps or PROPOSAL_NET_STEPS} if "unet" in nets else {}),
        "proposals": [{"kind": e.kind, "opinion": e.opinion} for e in recipe.vision.proposals],
        **({"feature_set": FEATURE_SET} if "pixel-mlp" in nets else {}),
        "classifier_role": recipe.vision.classifier_role,
    }
    views, encoder_sha256 = None, None
    if recipe.vision.proposals_on_sam_embedding:
        segmenter = _load_segmenter(models_dir, recipe)
        encoder_sha256 = segmenter.encoder.metadata.sha256
        views = encode_views(samples, segmenter)
        record["encoder"] = {"name": recipe.vision.segmentation, "sha256": encoder_sha256}
    cache = None
    if folds > 1:
        cache = feature_cache(samples) if "pixel-mlp" in nets else None
        fold_idx = grouped_folds([s.row for s in samples], folds, group_by, seed)
        fold_metrics, pooled, by_fold = [], [], []
        with step(f"{recipe.name}: {folds}-fold cross-validation", total=len(samples), unit="held-out images") as cv_progress:
            for k, held in enumerate(fold_idx, 1):
                held_set = set(held)
                train = [s for i, s in enumerate(samples) if i not in held_set]
                test_rows = [samples[i].row for i in held]
                fold_dir = work_dir / f"fold{k}"
                t = time.monotonic()
                prop, clf, info = train_pair(train, recipe, fold_dir, f"{recipe.name}-fold{k}", seed, features=cache,
                                            proposal_steps=proposal_steps, views=views, encoder_sha256=encoder_sha256)
                fold_loaded = LoadedRecipe(recipe=trained_recipe(recipe, prop, clf, cv_mask_source), path=loaded.path, text=loaded.text,
                                           content_hash=loaded.content_hash)
                _link_sam(models_dir, fold_dir, fold_loaded.recipe)
                metrics, results = evaluate_fold(fold_loaded, fold_dir, test_rows, group_by, info, t, f"{k}/{folds}",
                                                 progress=counting(cv_progress))
                fold_metrics.append(metrics)
                pooled += results
                by_fold.append(results)
        pooled_metrics = summarise(pooled, [], recipe.good_class, bool(group_by))
        pooled_metrics.pop("skipped_rows", None)
        names = [c.name for c in recipe.classes]
        _write_held_out(work_dir / "held_out.json", by_fold)
        fitted = cross_fitted(by_fold, recipe.good_class, bool(group_by), classes=names)
        one = cross_fitted(by_fold, recipe.good_class, bool(group_by))
        record["cross_validation"] = {"folds": folds, "pooled": pooled_metrics, "per_fold": fold_metrics,
                                      "operating_point": fitted, "operating_point_one_threshold": one,
                                      "mask_source": cv_mask_source or "as in the recipe"}
        if group_by:
            per_part = cross_fitted(by_fold, recipe.good_class, True, per_part=True)
            record["cross_validation"]["operating_point_per_part"] = per_part
        # one threshold for all classes: per-class thresholds are reported too, but on the
        # magnetic tiles they overfit the good images they were chosen on (the cross-fitted
        # false-reject rate came out much higher), so the recipe gets the single one. With
        # parts (group_by) it must hold for parts too: the station rejects a part when any
        # of its views is rejected.
        choose_operating_point(record, by_fold, pooled, recipe.good_class, names, group_by, max_escape)
        print("pooled held-out: " + _line(pooled_metrics), file=sys.stderr, flush=True)
        print("pooled held-out, cross-fitted 1 % operating point, one threshold: " + _line(one["pooled"]), file=sys.stderr, flush=True)
        print("pooled held-out, cross-fitted 1 % operating point, per class: " + _line(fitted["pooled"]), file=sys.stderr, flush=True)
        if group_by:
            print("pooled held-out, cross-fitted 1 % operating point, one threshold for images and parts: "
                  + _line(per_part["pooled"]), file=sys.stderr, flush=True)
    with step(f"{recipe.name}: final models on all {len(samples)} images"):
        prop, clf, info = train_pair(samples, recipe, out_dir, prefix or recipe.name, seed, features=cache,
                                     proposal_steps=proposal_steps, views=views, encoder_sha256=encoder_sha256)
    record["final"] = {"proposals": [e.model_dump() for e in prop], "classifier": clf, "train_info": info,
                       "sha256": {n: ModelMetadata.read(out_dir / f"{n}.json").sha256 for n in (*(e.model for e in prop), clf)}}
    record["trained_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out_dir / f"{prefix or recipe.name}.record.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if update_recipe:  # the thresholds are read off the pooled held-out folds
        write_atomically(loaded.path, recipe_text(trained_recipe_of(recipe, record), loaded.path.read_text(encoding="utf-8")))
    return record



def training_data(manifest: Path, recipe: Recipe, group_by: str | None) -> tuple[list[Sample], dict]:
    """The manifest's usable samples for ``recipe`` (rows of other classes and unreadable ones
    skipped, with their reasons) and the record's ``data`` entry."""
    rows = read_manifest(manifest)
    known = {c.name for c in recipe.classes} | {recipe.good_class}
    usable = [r for r in rows if r.label in known]
    samples, skipped = load_samples(usable)
    bad_class = [r for r in rows if r.label not in known]
    log.info("manifest %s: %d rows, %d usable, %d skipped", manifest, len(rows), len(samples), len(skipped) + len(bad_class))
    return samples, {
        "manifest": str(manifest), "manifest_sha256": hashlib.sha256(Path(manifest).read_bytes()).hexdigest(),
        "rows": len(rows), "used": len(samples), "skipped": len(skipped) + len(bad_class),
        "skipped_reasons": {**skip_summary(skipped), **({"class": len(bad_class)} if bad_class else {})},
        "group_by": group_by, "class_counts": {c: sum(s.row.label == c for s in samples) for c in sorted(known)},
        # what `station eval` checks to say it is judging training images (station.vision.trained_on)
        "image_sha256": sorted({image_hash(s.row.image) for s in samples}),
    }


def evaluate_fold(fold_loaded: LoadedRecipe, fold_dir: Path, test_rows: list, group_by: str | None, info: dict,
                  started: float, which: str, progress=None) -> tuple[dict, list[ImageResult]]:
    """A fold's held-out rows inspected by the real inspector on the fold's models (``station
    eval``'s code path); (metrics with the training info and seconds, per-image results)."""
    from station.vision.inspector import build_inspector

    inspector = build_inspector(fold_loaded, fold_dir, "onnxruntime", 0)
    metrics, results = evaluate(inspector, fold_loaded, test_rows, group_by, progress=progress)
    metrics.pop("skipped_rows", None)
    metrics["train_info"] = info
    metrics["seconds"] = round(time.monotonic() - started, 1)
    print(f"fold {which}: " + _line(metrics), file=sys.stderr, flush=True)
    return metrics, results


def chosen_operating_point(pooled: list[ImageResult], good_class: str, group_by: str | None) -> tuple[dict, float] | None:
    """(the record's ``operating_point``, the threshold) read off the pooled held-out folds: one
    threshold for all classes rejecting at most 1 % of the good images (and good parts, with
    ``group_by``); None without good and defective images."""
    if not operating_point(pooled, good_class):
        return None
    point = threshold_for(pooled, good_class, per_part=bool(group_by))
    which = "good images and good parts" if group_by else "good images"
    return {"min_confidence": min_confidence_above(point),
            "chosen_on": f"pooled held-out folds: one threshold for all classes that rejects at most 1 % of the {which}"}, point


def choose_operating_point(record: dict, by_fold: list[list[ImageResult]], pooled: list[ImageResult], good_class: str,
                           classes: list[str], group_by: str | None, max_escape: float | None) -> None:
    """``record["operating_point"]`` (``chosen_operating_point``) and, with ``max_escape``, its
    review band (``choose_review_band``); nothing without good and defective images."""
    chosen = chosen_operating_point(pooled, good_class, group_by)
    if chosen:
        record["operating_point"], point = chosen
        if max_escape is not None:
            choose_review_band(record, by_fold, pooled, good_class, classes, group_by, point, max_escape)


def choose_review_band(record: dict, by_fold: list[list[ImageResult]], pooled: list[ImageResult], good_class: str,
                       classes: list[str], group_by: str | None, point: float, max_escape: float) -> float | None:
    """The review band for at most ``max_escape`` escapes, read off the pooled held-out folds
    below the reject threshold ``point`` (written into ``record["operating_point"]["review_at"]``,
    None when the threshold alone meets it), and the same rule cross-fitted (chosen on the other
    folds) into ``record["cross_validation"]["operating_point_review_band"]``. Returns review_at."""
    band = cross_fitted(by_fold, good_class, bool(group_by), per_part=bool(group_by), max_escape=max_escape)
    record["cross_validation"]["operating_point_review_band"] = band
    review = review_threshold_for(pooled, good_class, dict.fromkeys(classes, point), max_escape, bool(group_by))
    review_at = min_confidence_above(review)
    what = "defective images and parts" if group_by else "defective images"
    record["operating_point"]["review_at"] = review_at if review_at < record["operating_point"]["min_confidence"] else None
    record["operating_point"]["review_chosen_on"] = (
        f"pooled held-out folds: the highest review threshold at which at most {max_escape:.0%} of the {what} "
        "escape (none when the threshold alone meets it)")
    print(f"pooled held-out, cross-fitted review band for at most {max_escape:.0%} escapes: " + _line(band["pooled"]),
          file=sys.stderr, flush=True)
    return record["operating_point"]["review_at"]


def min_confidence_above(point: float) -> float:
    """The smallest 6-decimal min_confidence above ``point`` (the recipe rejects a confidence at
    or above it; the threshold rejects scores above ``point``), at most 0.999999. Six decimals,
    not four: a per-cell head's scores crowd near 1 (its 1 % point on the magnetic tiles is
    ~0.9998), and 0.999 would reject far more than 1 % of good parts."""
    return min(0.999999, (math.floor(point * 1e6) + 1) / 1e6)


def _load_segmenter(models_dir: Path, recipe: Recipe) -> SamSegmenter:
    """The recipe's SAM pair, pulled into ``models_dir`` if needed (a head is trained on its embeddings)."""
    from station.inference.factory import load_model
    from station.models_store import pull

    name = recipe.vision.segmentation
    pull(name, models_dir)
    decoder = ModelMetadata.read(Path(models_dir) / f"{name}.json").pair
    return SamSegmenter(load_model(models_dir, name, "onnxruntime", 0), load_model(models_dir, decoder, "onnxruntime", 0))


def _link_sam(models_dir: Path, fold_dir: Path, recipe: Recipe) -> None:
    """Make the SAM pair visible in a fold's model directory (symlinks to the pulled files)."""
    sam = recipe_models(recipe).segmentation
    if sam is not None:
        link_pulled(models_dir, fold_dir, sam)


def link_pulled(models_dir: Path, fold_dir: Path, name: str) -> None:
    """Pull ``name`` (and its pair) into ``models_dir`` and make it visible in ``fold_dir`` (symlinks)."""
    from station.models_store import pull

    fold_dir.mkdir(parents=True, exist_ok=True)
    for res in pull(name, models_dir):
        for name in (f"{res.name}.json", res.path.name):
            link = fold_dir / name
            if not link.exists():
                link.symlink_to((Path(models_dir) / name).resolve())


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _line(m: dict) -> str:
    keys = ["detection_rate", "false_reject_rate", "escape_rate", "review_rate", "type_accuracy", "mean_iou", "part_detection_rate",
            "part_false_reject_rate", "part_escape_rate", "part_review_rate", "auroc", "part_auroc",
            "detection_at_1pct_false_reject"]
    return "  ".join(f"{k} {_fmt(m.get(k))}" for k in keys if k in m)

