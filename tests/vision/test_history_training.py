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


BACKBONE_REFUSALS = [
    # (recipe text edit, extra arguments, exit code, the one line says)
    ("", ["--folds", "0"], 1, "a backbone candidate's min_confidence is chosen on held-out folds: use --folds 2 or more"),
    ("min_confidence = 0.999976\nreview_at = 0.99\n", [], 1, "has a review band (review_at): a new head's band must be "
                                                           "chosen for its own scores: pass --max-escape RATE"),
    ('segmentation = "litemedsam"\nclassifier = "tile-namer"\n', [], 1,
     "trains a backbone recipe's head only; remove vision.classifier (tile-namer)"),
    ("", ["--group-by", "tile_group"], 1, "--group-by names the --base-data manifest's part column, give --base-data too"),
    ("", ["--base-data", "nowhere.csv"], 1, "nowhere.csv: no such manifest"),
    ('head = "magnetic-tile-backbone-head"\n', [], 1, None),  # unchanged: its record names the original training set
    ('head = "someone-elses-head"\n', [], 1, "no training record describes its models"),
    ("", ["--cv-mask-source", "proposal"], 1, "--cv-mask-source and --proposal-steps are for proposal nets"),
    ("", ["--base-data", "a.csv", "--no-base-data"], 2, "not allowed with argument"),
]


@pytest.mark.parametrize("edit,extra,code,says", BACKBONE_REFUSALS)
def test_backbone_candidate_refusals_are_one_line_and_write_nothing(tmp_path, capsys, edit, extra, code, says):
    from station.cli import main

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (REPO / "recipes" / "magnetic-tile.toml").read_text()
    if edit:
        key = edit.split(" = ")[0].split("\n")[0]
        old = next(line for line in text.splitlines() if line.startswith(f"{key} = "))
        text = text.replace(old + "\n", edit, 1)
        assert edit in text
    (recipes / "magnetic-tile.toml").write_text(text)
    db = tmp_path / "history.db"
    args = ["train", "--recipe", "magnetic-tile", "--from-history", "--db", f"sqlite:///{db}", "--archive", str(tmp_path / "images"),
            "--recipes-dir", str(recipes), "--models-dir", str(tmp_path / "models"), "--work-dir", str(tmp_path / "work"), "--folds", "3",
            *extra]
    with pytest.raises(SystemExit) if code == 2 else _nothing() as exited:
        assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    if code == 2:
        assert exited.value.code == 2 and says in err[-1]
        return
    err = [line for line in err if " INFO " not in line]  # the log's progress lines; the refusal is the one error line
    assert len(err) == 1 and err[0].startswith("error: "), err
    if says is None:  # the shipped record's training set was found: it stops at the empty history instead
        assert "no usable reviewed part among 0 reviewed parts of magnetic-tile" in err[0]
    else:
        assert says in err[0]
        assert not db.exists()  # refused before the history was opened
    assert (recipes / "magnetic-tile.toml").read_text() == text
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def _nothing():
    import contextlib

    return contextlib.nullcontext()
