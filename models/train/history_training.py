"""`station train --from-history`: retrain a recipe on the plant's own reviewed parts and store
the result as a CANDIDATE version; the line keeps running the active one.

1. The reviewed parts of the recipe (``db.labels.LabelStore.reviewed_parts``, filtered by time
   and station) become a manifest in the work folder (``db.training_set``: images from the
   archive, masks from the labels, one group per part).
2. With ``holdout`` > 0 a share of the parts (whole parts, chosen reproducibly from ``seed``, as
   many of the good as of the defective ones in proportion) is kept out of the training, so
   `station eval --from-history` can judge the candidate on parts it never saw.
3. ``train_recipe`` trains on the rest (grouped folds by part when ``folds`` > 1), writing the
   models as ``<recipe>-v<N>-…`` into the station's models directory, next to their record
   ``<recipe>-v<N>.record.json`` (which also lists the parts trained on and held out).
   A backbone recipe (analyzer "backbone") trains a new head ``<recipe>-v<N>-backbone-head`` on
   the shared backbone, on its ORIGINAL training set plus the reviewed parts
   (models/train/base_data.py: the plant's first parts alone are too few), with its operating
   point (min_confidence; with ``max_escape`` the review band) chosen on grouped held-out folds
   as `station train` does; so it needs ``folds`` >= 2, and ``max_escape`` when the active
   recipe has a review band (the band of the old head's scores means nothing for a new head).
   Any recipe may be given ``base_data`` explicitly; without it only a backbone recipe looks
   it up (``use_base_data=False``: the reviewed parts only).
4. Version N (the next free version number) is stored in the history database as a candidate
   (``recipe_versions``, audited "recipe.candidate"). Nothing in the recipes directory or the
   repository is written: the HMI's recipe page validates and activates it.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import tomllib
from dataclasses import dataclass
from pathlib import Path

from station.db.engine import make_engine
from station.db.labels import LabelStore
from station.db.migrate import upgrade
from station.db.recipe_versions import RecipeVersions, RecipeVersion
from station.db.training_set import write_manifest
from station.models.train.backbone_recipe import check_trainable
from station.models.train.base_data import PART_COLUMN, BaseData, given_base_data, merged_manifest, recorded_base_data
from station.models.train.recipe_training import train_recipe, trained_recipe_of
from station.paths import REPO_ROOT
from station.recipe import BackboneVision, LoadedRecipe, Recipe
from station.vision.dataset import group_of, read_manifest
from station.recipe_file import recipe_text


class NotEnoughLabels(ValueError):
    """The history holds too few usable reviewed parts to train on; says what is missing."""


@dataclass
class Candidate:
    version: RecipeVersion
    record: dict
    record_path: Path


def candidate_prefix(name: str, version: int) -> str:
    """The name every model file and the record of candidate ``version`` of recipe ``name`` start with."""
    return f"{name}-v{version}"


def record_path(models_dir: Path, name: str, version: int) -> Path:
    return Path(models_dir) / f"{candidate_prefix(name, version)}.record.json"


def held_out(parts, share: float, seed: int) -> set[int]:
    """Inspection IDs of ``share`` of the good and ``share`` of the defective parts (rounded, at
    least one of each kind that has two or more), drawn reproducibly from ``seed``."""
    if share <= 0:
        return set()
    rng = random.Random(seed)
    out: set[int] = set()
    for verdict in ("reject", "pass"):
        ids = sorted(p.inspection_id for p in parts if p.label.verdict == verdict)
        n = min(len(ids) - 1, max(1, round(share * len(ids)))) if len(ids) > 1 else 0
        out |= set(rng.sample(ids, n))
    return out


def _has_review_band(recipe: Recipe) -> bool:
    return recipe.review_at is not None or any(c.review_at is not None for c in recipe.classes)


def check_backbone_request(recipe: Recipe, folds: int, max_escape: float | None, cv_mask_source: str | None,
                           proposal_steps: int | None) -> None:
    """The one-line refusals of a backbone candidate that cannot be trained or get no operating
    point, before the history is read."""
    check_trainable(recipe, cv_mask_source, proposal_steps)
    if folds < 2:
        raise ValueError(f"recipe {recipe.name}: a backbone candidate's min_confidence is chosen on held-out folds: "
                         "use --folds 2 or more (the shipped head used 3)")
    if max_escape is None and _has_review_band(recipe):
        raise ValueError(f"recipe {recipe.name} has a review band (review_at): a new head's band must be chosen for its own "
                         "scores: pass --max-escape RATE")


def train_candidate(active: LoadedRecipe, db_url: str, archive_dir: Path, models_dir: Path, work_dir: Path, *,
                    since: dt.datetime | None = None, until: dt.datetime | None = None, station_id: str | None = None,
                    folds: int = 0, holdout: float = 0.0, seed: int = 0, max_escape: float | None = None,
                    proposal_steps: int | None = None, cv_mask_source: str | None = None, command: str = "",
                    author: str = "station train", base_data: Path | None = None, base_group_by: str | None = None,
                    use_base_data: bool = True) -> Candidate:
    """Train a candidate version of ``active`` (the recipe file the line runs) on the reviewed
    parts in the history at ``db_url`` (see the module doc). Raises NotEnoughLabels, and
    ValueError (BaseDataMissing among them) for a request that cannot be trained."""
    models_dir = Path(models_dir).resolve()
    if models_dir.is_relative_to(REPO_ROOT / "models") or models_dir.is_relative_to(REPO_ROOT / "recipes"):
        raise ValueError(f"{models_dir}: a candidate's models go into the station's models directory, not the repository")
    recipe = active.recipe
    backbone = isinstance(recipe.vision, BackboneVision)
    if backbone:
        check_backbone_request(recipe, folds, max_escape, cv_mask_source, proposal_steps)
    if base_data is not None and not use_base_data:
        raise ValueError("--base-data and --no-base-data contradict each other")
    if base_group_by is not None and base_data is None:
        raise ValueError("--from-history groups the reviewed views by part: --group-by names the --base-data manifest's "
                         "part column, give --base-data too")
    base: BaseData | None = None
    if base_data is not None:
        base = given_base_data(base_data, base_group_by)
    elif backbone and use_base_data:
        base = recorded_base_data(active, models_dir)
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        parts = LabelStore(engine).reviewed_parts(recipe.name, since=since, until=until, station_id=station_id)
        versions = RecipeVersions(engine)
        version = max(versions.latest_version(recipe.name), recipe.version) + 1
        prefix = candidate_prefix(recipe.name, version)
        work = Path(work_dir) / prefix
        held = held_out(parts, holdout, seed)
        trainable = [p for p in parts if p.inspection_id not in held]
        data = write_manifest(trainable, archive_dir, work / "data", recipe.good_class, [c.name for c in recipe.classes])
        defective = sum(n for c, n in data.class_counts.items() if c != recipe.good_class)
        reasons = "; ".join(f"inspection {i}: {why}" for i, why in data.left_out[:5])
        if base is not None and not data.parts:
            raise NotEnoughLabels(f"no usable reviewed part among {len(parts)} reviewed parts of {recipe.name}"
                                  f" ({len(held)} held out){': ' + reasons if reasons else ''}: label some in the review queue")
        if base is None and not defective:
            raise NotEnoughLabels(f"no usable part labelled defective among {len(parts)} reviewed parts of {recipe.name}"
                                  f" ({len(held)} held out){': ' + reasons if reasons else ''}: label some in the review queue")
        manifest = data.manifest if base is None else merged_manifest(base, data.manifest, work / "data" / "with-base.csv")
        groups = len({group_of(r, PART_COLUMN) for r in read_manifest(manifest)})
        if folds > 1 and groups < folds:
            raise NotEnoughLabels(f"{groups} reviewed parts cannot make {folds} folds: label more parts or use --folds 0")
        record = train_recipe(active, manifest, models_dir, work / "folds", models_dir, PART_COLUMN, folds, seed,
                              update_recipe=False, command=command, cv_mask_source=cv_mask_source,
                              proposal_steps=proposal_steps, max_escape=max_escape, prefix=prefix)
        record["base_data"] = None if base is None else base.entry()  # what the next candidate starts from
        record["history"] = {
            "database": engine.url.render_as_string(hide_password=True), "since": since and since.isoformat(),
            "until": until and until.isoformat(), "station": station_id, "reviewed_parts": len(parts),
            "trained_on": sorted(data.inspections), "held_out": sorted(held), "left_out": data.left_out,
            "class_counts": data.class_counts,
        }
        new = trained_recipe_of(recipe, record).model_copy(update={"version": version})
        text = recipe_text(new, active.text)
        tomllib.loads(text)  # recipe_text checked that it loads back as ``new``
        note = (f"candidate trained on {data.parts} reviewed parts ({data.rows} images; {len(held)} held out) from the history"
                + (f" and its original training set {base.manifest}" if base else "") + f"; models {prefix}-*")
        stored = versions.record_candidate(recipe.name, version, text, author, active.text, note)
        record["candidate"] = {"name": recipe.name, "version": version, "content_hash": stored.content_hash}
        path = record_path(models_dir, recipe.name, version)
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return Candidate(stored, record, path)
    finally:
        engine.dispose()


__all__ = ["train_candidate", "held_out", "check_backbone_request", "Candidate", "NotEnoughLabels", "candidate_prefix",
           "record_path"]
