"""Whether an evaluation runs on the images a recipe's models were trained on.

Figures measured on training images flatter a model (the tile recipe's in-sample detection is
far above its held-out one), and nothing in the numbers says so. ``station eval`` asks this
module and warns.

The evidence is the training record (``<recipe>.record.json``, written by ``station train``
beside the models; the shipped ones in ``models/trained/``) whose ``final.sha256`` matches the
models the recipe loads. A record lists the content hash of every training image
(``data.image_sha256``); records written before that are matched by the manifest: the same
manifest file, or rows naming the same image files as the recorded manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from station.inference.metadata import ModelError, ModelMetadata
from station.paths import TRAINED_DIR
from station.recipe import LoadedRecipe
from station.recipe_models import recipe_models
from station.vision.dataset import Row, read_manifest

HASH_CHARS = 16  # 64 bits of sha256 per image: no accidental collision in any plausible data set


def image_hash(path: Path) -> str:
    """The short content hash a training record keeps of one image file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:HASH_CHARS]


@dataclass(frozen=True)
class TrainedOn:
    """``seen`` of ``total`` evaluated images were training images of the models (per ``record``)."""

    seen: int
    total: int
    record: Path
    how: str  # "image hashes", "same manifest", "manifest rows"

    def warning(self) -> str:
        share = "all" if self.seen == self.total else f"{self.seen} of {self.total}"
        return (f"{share} images evaluated were used to train this recipe's models ({self.record}, matched by {self.how}): "
                "these figures are in-sample and overstate what the recipe does on new parts; evaluate held-out images "
                "or read the record's cross-validation")


def _records(recipe_name: str, models_dir: Path | None) -> list[Path]:
    dirs = [d for d in (models_dir, TRAINED_DIR) if d is not None]
    return [p for d in dirs for p in sorted(Path(d).glob(f"{recipe_name}*.record.json"))]


def _describes(record: dict, loaded: LoadedRecipe, models_dir: Path | None) -> bool:
    """The record's final models are the ones this recipe loads (by name, and by sha256 where the file is here)."""
    final = (record.get("final") or {}).get("sha256") or {}
    names = set(recipe_models(loaded.recipe).names)
    if not final or not set(final) <= names:
        return False
    for name, sha in final.items():
        here = [Path(d) / f"{name}.json" for d in (models_dir, TRAINED_DIR) if d is not None]
        meta = next((m for m in here if m.exists()), None)
        try:
            if meta is not None and ModelMetadata.read(meta).sha256 != sha:
                return False
        except ModelError:  # unreadable metadata: loading the recipe says so, not this check
            return False
    return True


def training_records(loaded: LoadedRecipe, models_dir: Path | None = None) -> Iterator[tuple[Path, dict]]:
    """(path, record) of each readable training record that describes the models ``loaded`` loads."""
    for path in _records(loaded.recipe.name, models_dir):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if _describes(record, loaded, models_dir):
            yield path, record


def trained_on(loaded: LoadedRecipe, manifest: Path, rows: list[Row], models_dir: Path | None = None) -> TrainedOn | None:
    """How many of ``rows`` (read from ``manifest``) trained the recipe's models; None if none did or no record says."""
    for path, record in training_records(loaded, models_dir):
        data = record.get("data") or {}
        hashes = set(data.get("image_sha256") or ())
        if hashes:
            seen = sum(1 for r in rows if r.image.exists() and image_hash(r.image) in hashes)
            how = "image hashes"
        elif data.get("manifest_sha256") == hashlib.sha256(Path(manifest).read_bytes()).hexdigest():
            seen, how = len(rows), "same manifest"
        else:
            recorded = Path(data.get("manifest", ""))
            if not recorded.is_file() or hashlib.sha256(recorded.read_bytes()).hexdigest() != data.get("manifest_sha256"):
                continue  # the manifest it names is gone or changed: no evidence either way
            trained = {r.image.resolve() for r in read_manifest(recorded)}
            seen, how = sum(1 for r in rows if r.image.resolve() in trained), "manifest rows"
        if seen:
            return TrainedOn(seen, len(rows), path, how)
    return None


__all__ = ["TrainedOn", "trained_on", "training_records", "image_hash", "HASH_CHARS"]
