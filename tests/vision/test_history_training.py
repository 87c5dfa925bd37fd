"""`station train --from-history` and `station eval --from-history` where nothing can be trained
or validated: clear errors, nothing written (the whole loop runs in tests/hmi/test_review_loop.py).
And `station train`'s defaults never write the shipped files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from station.cli import build_parser
from tests.recipes import REPO


def station(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_defaults_leave_the_shipped_files_alone():
    args = build_parser().parse_args(["train", "--recipe", "magnetic-tile", "--data", "m.csv"])
    assert args.out is None and not args.update_recipe  # cmd_train: out -> var/trained
    from station.commands.vision import DEFAULT_OUT

    assert DEFAULT_OUT == Path("var/trained")
    helptext = subprocess.run([sys.executable, "-m", "station.cli", "train", "--help"], capture_output=True, text=True,
                              cwd=REPO, timeout=120).stdout
    assert "--out models/trained --update-recipe" in " ".join(helptext.split())


def test_from_history_needs_a_history_and_labelled_parts(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "magnetic-tile-nets.toml").write_text((REPO / "recipes" / "magnetic-tile-nets.toml").read_text())
    before = (recipes / "magnetic-tile-nets.toml").read_text()
    proc = station("train", "--recipe", "magnetic-tile-nets", "--from-history", "--recipes-dir", str(recipes), cwd=tmp_path)
    assert proc.returncode == 2 and "--from-history needs the history" in proc.stderr
    proc = station("train", "--recipe", "magnetic-tile-nets", "--data", "m.csv", "--db", "sqlite:///x.db", cwd=tmp_path)
    assert proc.returncode == 2 and "go with --from-history" in proc.stderr
    db = f"sqlite:///{tmp_path / 'history.db'}"
    common = ["--db", db, "--archive", str(tmp_path / "images"), "--recipes-dir", str(recipes)]
    proc = station("train", "--recipe", "magnetic-tile-nets", "--from-history", *common, "--models-dir", str(tmp_path / "models"),
                   "--work-dir", str(tmp_path / "work"), cwd=tmp_path)
    assert proc.returncode == 1 and "no usable part labelled defective among 0 reviewed parts" in proc.stderr, proc.stderr
    assert (recipes / "magnetic-tile-nets.toml").read_text() == before
    proc = station("train", "--recipe", "magnetic-tile-nets", "--from-history", *common, "--since", "yesterday", cwd=tmp_path)
    assert proc.returncode == 2 and "since" in proc.stderr
    proc = station("eval", "--recipe", "magnetic-tile-nets", "--from-history", *common, cwd=tmp_path)
    assert proc.returncode == 2 and "NAME@VERSION" in proc.stderr
    proc = station("eval", "--recipe", "magnetic-tile-nets@7", "--from-history", *common, cwd=tmp_path)
    assert proc.returncode == 1 and "no stored version 7 of recipe 'magnetic-tile-nets'" in proc.stderr


def test_a_candidate_never_goes_into_the_repository(tmp_path):
    pytest.importorskip("torch")
    from station.models.train.history_training import train_candidate
    from station.recipe import load_recipe

    loaded = load_recipe(REPO / "recipes" / "magnetic-tile-nets.toml")
    for inside in (REPO / "models" / "trained", REPO / "recipes"):
        with pytest.raises(ValueError, match="not the repository"):
            train_candidate(loaded, f"sqlite:///{tmp_path / 'h.db'}", tmp_path, inside, tmp_path / "work")
