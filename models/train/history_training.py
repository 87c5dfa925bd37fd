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
from station.models.train.recipe_training import train_recipe, trained_recipe_of
from station.paths import REPO_ROOT
from station.recipe import LoadedRecipe
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


def train_candidate(active: LoadedRecipe, db_url: str, archive_dir: Path, models_dir: Path, work_dir: Path, *,
                    since: dt.datetime | None = None, until: dt.datetime | None = None, station_id: str | None = None,
                    folds: int = 0, holdout: float = 0.0, seed: int = 0, max_escape: float | None = None,
                    proposal_steps: int | None = None, cv_mask_source: str | None = None, command: str = "",
                    author: str = "station train") -> Candidate:
    """Train a candidate version of ``active`` (the recipe file the line runs) on the reviewed
    parts in the history at ``db_url`` (see the module doc). Raises NotEnoughLabels."""
    models_dir = Path(models_dir).resolve()
    if models_dir.is_relative_to(REPO_ROOT / "models") or models_dir.is_relative_to(REPO_ROOT / "recipes"):
        raise ValueError(f"{models_dir}: a candidate's models go into the station's models directory, not the repository")
    recipe = active.recipe
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
        if not defective:
            reasons = "; ".join(f"inspection {i}: {why}" for i, why in data.left_out[:5])
            raise NotEnoughLabels(f"no usable part labelled defective among {len(parts)} reviewed parts of {recipe.name}"
                                  f" ({len(held)} held out){': ' + reasons if reasons else ''}: label some in the review queue")
        groups = len({p.group for p in trainable})
        if folds > 1 and groups < folds:
            raise NotEnoughLabels(f"{groups} reviewed parts cannot make {folds} folds: label more parts or use --folds 0")
        record = train_recipe(active, data.manifest, models_dir, work / "folds", models_dir, "part", folds, seed,
                              update_recipe=False, command=command, cv_mask_source=cv_mask_source,
                              proposal_steps=proposal_steps, max_escape=max_escape, prefix=prefix)
        record["history"] = {
            "database": engine.url.render_as_string(hide_password=True), "since": since and since.isoformat(),
            "until": until and until.isoformat(), "station": station_id, "reviewed_parts": len(parts),
            "trained_on": sorted(data.inspections), "held_out": sorted(held), "left_out": data.left_out,
            "class_counts": data.class_counts,
        }
        new = trained_recipe_of(recipe, record).model_copy(update={"version": version})
        text = recipe_text(new, active.text)
        tomllib.loads(text)  # recipe_text checked that it loads back as ``new``
        note = (f"candidate trained on {data.parts} reviewed parts ({data.rows} images; {len(held)} held out) from the history; "
                f"models {prefix}-*")
        stored = versions.record_candidate(recipe.name, version, text, author, active.text, note)
        record["candidate"] = {"name": recipe.name, "version": version, "content_hash": stored.content_hash}
        path = record_path(models_dir, recipe.name, version)
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return Candidate(stored, record, path)
    finally:
        engine.dispose()


__all__ = ["train_candidate", "held_out", "Candidate", "NotEnoughLabels", "candidate_prefix", "record_path"]
