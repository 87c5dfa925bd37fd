"""What a backbone recipe's candidate trains on: the recipe's own training set (the manifest its
head was trained on) together with the plant's reviewed parts.

Why both: a plant's first reviewed parts are a few dozen; a head fitted on them alone forgets
what the recipe learned from hundreds of labelled views (and a threshold chosen on a handful of
good parts is noise). The reviewed parts are added to the original set, so every label the plant
gives moves the head, and the operating point is chosen on held-out folds of both.

The original set is found from the training record of the models the active recipe loads
(``station.vision.trained_on.training_records``): a candidate's record keeps it as
``base_data`` (so v3 trains on the same base as v2, plus every reviewed part), the shipped
record names it as ``data`` (its manifest path is relative to the repository, where `station
train` ran). Its sha256 must match the record's: a changed or missing manifest is a clear error
that names ``--base-data`` (give it) and ``--no-base-data`` (train on the reviewed parts only).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from station.inference.metadata import sha256_file
from station.paths import REPO_ROOT
from station.recipe import LoadedRecipe
from station.vision.dataset import group_of, read_manifest
from station.vision.trained_on import training_records

PART_COLUMN = "part"  # the merged manifest's group column: the views of one part stay in one fold
BASE_PREFIX = "base:"  # the original set's groups, kept apart from the plant's part names


class BaseDataMissing(ValueError):
    """The recipe's original training set cannot be found or has changed; says what to pass."""


@dataclass(frozen=True)
class BaseData:
    manifest: Path  # absolute
    sha256: str
    group_by: str | None  # its column whose rows are one part
    found_in: str  # "--base-data" or the record it was read from

    def entry(self) -> dict:
        """The record's ``base_data`` (what the next candidate starts from)."""
        return {"manifest": str(self.manifest), "manifest_sha256": self.sha256, "group_by": self.group_by,
                "found_in": self.found_in}


def given_base_data(manifest: Path, group_by: str | None) -> BaseData:
    """``--base-data MANIFEST`` (with ``--group-by COLUMN``)."""
    manifest = Path(manifest).resolve()
    if not manifest.is_file():
        raise BaseDataMissing(f"--base-data {manifest}: no such manifest")
    return BaseData(manifest, sha256_file(manifest), group_by, "--base-data")


def recorded_base_data(loaded: LoadedRecipe, models_dir: Path) -> BaseData:
    """The original training set of the models ``loaded`` loads, from their training record."""
    name = loaded.recipe.name
    hint = "pass --base-data MANIFEST (with --group-by COLUMN) or --no-base-data to train on the reviewed parts only"
    for path, record in training_records(loaded, models_dir):
        if "base_data" in record:  # a candidate trained from history
            data = record["base_data"]
            if data is None:
                raise BaseDataMissing(f"recipe {name}: its models ({path.name}) were trained on reviewed parts only: {hint}")
        else:
            data = record.get("data") or {}
        if not data.get("manifest"):
            continue
        recorded = Path(data["manifest"])
        where = [recorded] if recorded.is_absolute() else [Path.cwd() / recorded, REPO_ROOT / recorded]
        found = next((p.resolve() for p in where if p.is_file()), None)
        if found is None:
            raise BaseDataMissing(f"recipe {name}: its training set {recorded} (record {path.name}) is not here: {hint}")
        digest = sha256_file(found)
        if digest != data.get("manifest_sha256"):
            raise BaseDataMissing(f"recipe {name}: its training set {found} changed since {path.name} was written: {hint}")
        return BaseData(found, digest, data.get("group_by"), str(path))
    raise BaseDataMissing(f"recipe {name}: no training record describes its models ({models_dir}, models/trained): {hint}")


def merged_manifest(base: BaseData, reviewed: Path, out: Path) -> Path:
    """One manifest (image, mask, class, part; absolute paths) of the base rows (groups
    ``base:<group>``) and the reviewed parts' manifest (``db.training_set``; its ``part``)."""
    rows = [[str(r.image), str(r.mask or ""), r.label, BASE_PREFIX + group_of(r, base.group_by)]
            for r in read_manifest(base.manifest)]
    rows += [[str(r.image), str(r.mask or ""), r.label, group_of(r, PART_COLUMN)] for r in read_manifest(reviewed)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("image", "mask", "class", PART_COLUMN))
        w.writerows(rows)
    return out


__all__ = ["BaseData", "BaseDataMissing", "given_base_data", "recorded_base_data", "merged_manifest", "PART_COLUMN"]
