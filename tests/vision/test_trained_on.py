"""`station eval` says when it judges the images a recipe's models were trained on.

The shipped demo-part models were trained on `station simulate --count 300 --seed 7
--defect-rate 0.6` (their record says so): making that set again gives the very manifest, and
the check must recognise it; another seed must not be taken for it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from station.recipe import load_recipe
from station.vision.dataset import read_manifest
from station.vision.trained_on import trained_on

REPO_ROOT = Path(__file__).resolve().parents[2]


def simulate(out: Path, seed: int) -> Path:
    proc = subprocess.run([sys.executable, "-m", "station.cli", "simulate", "--count", "300", "--out", str(out), "--seed", str(seed),
                           "--defect-rate", "0.6"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out / "manifest.csv"


def test_the_demo_models_training_set_is_recognised_and_another_is_not(tmp_path, monkeypatch):
    recipe = load_recipe(REPO_ROOT / "recipes" / "demo-part.toml")
    trained = simulate(tmp_path / "var" / "demo-sim", 7)
    rows = read_manifest(trained)
    seen = trained_on(recipe, trained, rows)
    assert seen is not None and (seen.seen, seen.total, seen.how) == (300, 300, "same manifest")
    assert seen.record.name == "demo-part.record.json"
    assert seen.warning().startswith("all images evaluated were used to train")

    # a few of those images in a manifest of their own: found through the recorded manifest's rows
    # (its path is relative to where `station train` ran: here, tmp_path)
    monkeypatch.chdir(tmp_path)
    subset = tmp_path / "subset.csv"
    subset.write_text("image,mask,class\n" + "".join(f"var/demo-sim/{r.image.relative_to(trained.parent)},,{r.label}\n"
                                                      for r in rows[:5]))
    partly = read_manifest(subset) + read_manifest(simulate(tmp_path / "other", 8))[:3]
    seen = trained_on(recipe, subset, partly)
    assert (seen.seen, seen.total, seen.how) == (5, 8, "manifest rows")
    assert seen.warning().startswith("5 of 8 images evaluated")

    other = simulate(tmp_path / "other", 8)
    assert trained_on(recipe, other, read_manifest(other)) is None


def test_a_recipe_whose_models_differ_from_the_record_is_not_matched(tmp_path):
    """The plate-threshold recipe loads no model: no record describes it, whatever the images."""
    trained = simulate(tmp_path / "var" / "demo-sim", 7)
    recipe = load_recipe(REPO_ROOT / "recipes" / "plate-threshold.toml")
    assert trained_on(recipe, trained, read_manifest(trained)) is None
