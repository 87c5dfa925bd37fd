"""`station eval` on a small manifest whose answers are known by construction.

The threshold analyzer finds exactly the dark squares drawn on a flat background, so every
verdict, class and mask below is known before the run; the metrics must come out exactly.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.vision.conftest import write_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]
H, W = 120, 160


def flat() -> np.ndarray:
    return np.full((H, W), 150, np.uint8)


def square(img: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
    img = img.copy()
    img[y : y + side, x : x + side] = 30
    return img


def mask_of(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


@pytest.fixture
def manifest(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    rows = []

    def add(name, image, cls, part, mask=None):
        if image is not None:
            cv2.imwrite(str(d / name), image)
        mask_name = ""
        if mask is not None:
            mask_name = name.replace(".png", "_mask.png")
            cv2.imwrite(str(d / mask_name), mask)
        rows.append({"image": name, "mask": mask_name, "class": cls, "part": part, "note": "x"})

    add("good1.png", flat(), "good", "P1", np.zeros((H, W), np.uint8))
    add("stain.png", square(flat(), 40, 40, 12), "stain", "P1", mask_of(40, 40, 52, 52))  # IoU 1
    add("good2.png", square(flat(), 40, 40, 10), "good", "P2")  # a false reject
    add("crack_as_blob.png", square(flat(), 60, 30, 10), "crack", "P3", mask_of(60, 30, 65, 40))  # wrong type, IoU 0.5
    add("scratch_blank.png", flat(), "scratch", "P3", mask_of(10, 100, 90, 101))  # missed, IoU 0
    # rows that must be skipped, each for its own reason
    add("missing.png", None, "good", "P4")
    (d / "corrupt.png").write_bytes(b"not an image at all")
    add("corrupt.png", None, "good", "P4")
    add("deep.png", (flat().astype(np.uint16) * 256), "good", "P4")
    add("tiny.png", np.full((8, 8), 150, np.uint8), "good", "P4")
    add("mismatch.png", flat(), "stain", "P4", np.zeros((10, 10), np.uint8))
    add("dent.png", flat(), "dent", "P4")
    path = d / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "mask", "class", "part", "note"])
        w.writeheader()
        w.writerows(rows)
    return path


def run_eval(*args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "-m", "station.cli", "eval", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_eval_metrics_match_the_known_answers(tmp_path, manifest):
    write_recipe(tmp_path / "blobs.toml")
    proc = run_eval("--recipe", str(tmp_path / "blobs.toml"), "--data", str(manifest), "--group-by", "part", "--json",
                    "--models-dir", str(tmp_path / "models"))
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["images"] == 5 and m["defective_images"] == 3 and m["good_images"] == 2
    assert m["detection_rate"] == pytest.approx(2 / 3)
    assert m["false_reject_rate"] == pytest.approx(1 / 2)
    assert m["type_accuracy"] == pytest.approx(1 / 3)
    assert m["images_with_masks"] == 3
    assert m["mean_iou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert m["parts"] == 3 and m["defective_parts"] == 2 and m["good_parts"] == 1
    assert m["part_detection_rate"] == pytest.approx(1.0)
    assert m["part_false_reject_rate"] == pytest.approx(1.0)
    # Wilson 95 % intervals of the false-reject rates: 1 of 2 good images, 1 of 1 good part
    assert m["false_reject_ci95"] == pytest.approx([0.0945, 0.9055], abs=1e-4)
    assert m["part_false_reject_ci95"] == pytest.approx([0.2065, 1.0], abs=1e-4)
    assert m["per_class"]["crack"]["predicted_as"] == {"stain": 1}
    assert m["per_class"]["scratch"]["detection_rate"] == 0.0
    assert m["skipped"] == 6
    assert m["skipped_reasons"] == {"not found": 1, "unreadable": 1, "bit depth": 1, "too small": 1, "mask": 1, "class": 1}
    reasons = {Path(s["image"]).name: s["reason"] for s in m["skipped_rows"]}
    assert "16" in reasons["deep.png"] and "10x10" in reasons["mismatch.png"] and "'dent'" in reasons["dent.png"]
    # image scores: blobs at grey 30 under a threshold of 80 -> confidence 0.5 + 0.5 * 50 / 64
    # defective [0.89, 0.89, 0], good [0, 0.89]: AUROC (1 + .5 + 1 + .5 + .5 + 0) / 6
    assert m["auroc"] == pytest.approx(3.5 / 6)
    # parts score their best view: defective P1 0.89, P3 0.89 against good P2 0.89: all ties
    assert m["part_auroc"] == pytest.approx(0.5)
    assert m["threshold_at_1pct_false_reject"] == pytest.approx(0.5 + 0.5 * 50 / 64)
    assert m["detection_at_1pct_false_reject"] == 0.0
    for stage in ("preprocess", "analyse", "decide", "total"):
        assert 0 <= m["latency_ms"][stage]["p50"] <= m["latency_ms"][stage]["p99"]
    assert "warnings" not in m and "WARNING" not in proc.stderr
    # progress: not a terminal here, so log lines (a bar on a terminal); rows skipped count as done
    assert f"evaluate blobs on {manifest}: started, 11 images" in proc.stderr
    assert f"evaluate blobs on {manifest}: done (11 images of 11 images (100 %)" in proc.stderr


def test_eval_says_when_the_recipes_budget_is_shorter_than_an_image_takes_here(tmp_path):
    import cv2

    write_recipe(tmp_path / "blobs.toml")
    text = (tmp_path / "blobs.toml").read_text().replace("time_budget_ms = 1000", "time_budget_ms = 1")
    (tmp_path / "slow.toml").write_text(text.replace('name = "blobs"', 'name = "slow"'))
    big = np.full((3000, 3000), 150, np.uint8)  # 9 MP: preprocessing alone takes well over 1 ms
    big[100:200, 100:200] = 30
    cv2.imwrite(str(tmp_path / "big.png"), big)
    (tmp_path / "m.csv").write_text("image,mask,class\nbig.png,,stain\nbig.png,,good\n")
    proc = run_eval("--recipe", str(tmp_path / "slow.toml"), "--data", str(tmp_path / "m.csv"), "--json",
                    "--models-dir", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["latency_ms"]["total"]["p50"] > 1
    (warning,) = m["warnings"]
    assert "over the recipe's time budget of 1 ms" in warning and warning in proc.stderr


def test_eval_without_group_by_has_no_part_rates_and_prints_a_table(tmp_path, manifest):
    write_recipe(tmp_path / "blobs.toml")
    proc = run_eval("--recipe", str(tmp_path / "blobs.toml"), "--data", str(manifest), "--models-dir", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if line.strip()}
    assert lines["detection_rate"] == "0.6667" and lines["false_reject_rate"] == "0.5000"
    assert "false_reject_rate               0.5000   95 % interval (Wilson) 0.0945-0.9055" in proc.stdout
    assert "part_detection_rate" not in proc.stdout and "part_auroc" not in proc.stdout
    assert "skipped 6" in proc.stdout


def test_empty_manifest_and_unknown_group_column_are_clear_errors(tmp_path, manifest):
    write_recipe(tmp_path / "blobs.toml")
    empty = tmp_path / "empty.csv"
    empty.write_text("image,mask,class\n")
    proc = run_eval("--recipe", str(tmp_path / "blobs.toml"), "--data", str(empty))
    assert proc.returncode == 2 and "no rows" in proc.stderr
    proc = run_eval("--recipe", str(tmp_path / "blobs.toml"), "--data", str(manifest), "--group-by", "lighting")
    assert proc.returncode == 2 and "no column 'lighting'" in proc.stderr


def _result(label: str, score: float, group: str, top: str | None = "crack", **more: float):
    from station.vision.dataset import Row
    from station.vision.evaluate import ImageResult

    row = Row(0, Path(f"{group}.png"), None, label)
    scores = {top: score, **more} if top else {}
    return ImageResult(row, group, label, True, top, None, "", {}, max(scores.values(), default=0.0), scores)


def test_cross_fitted_operating_point_judges_each_fold_at_the_other_folds_threshold():
    from station.vision.evaluate import cross_fitted

    # fold A: good scores 0.1..0.5 (5 parts), defects 0.9 (crack, found as crack) and 0.3 (missed)
    # fold B: good scores 0.2..0.6 and one good part at 0.95, defects 0.8 (blowhole, named crack)
    fold_a = [_result("good", s, f"a{i}") for i, s in enumerate((0.1, 0.2, 0.3, 0.4, 0.5))]
    fold_a += [_result("crack", 0.9, "ad1", "crack"), _result("crack", 0.3, "ad2", "crack")]
    fold_b = [_result("good", s, f"b{i}") for i, s in enumerate((0.2, 0.3, 0.4, 0.5, 0.6, 0.95))]
    fold_b += [_result("blowhole", 0.8, "bd1", "crack")]
    out = cross_fitted([fold_a, fold_b], "good", grouped=True)
    # 1 % of 6 (or 5) good images allows none: the threshold is the other fold's highest good score
    assert out["thresholds"] == [{"crack": 0.95}, {"crack": 0.5}]
    a, b = out["per_fold"]
    assert a["detection_rate"] == 0.0 and a["false_reject_rate"] == 0.0  # nothing in A scores above 0.95
    assert b["detection_rate"] == 1.0 and b["false_reject_rate"] == 2 / 6  # 0.6 and 0.95 > 0.5
    assert b["type_accuracy"] == 0.0  # the blowhole was named a crack
    pooled = out["pooled"]
    assert pooled["detection_rate"] == 1 / 3 and pooled["false_reject_rate"] == 2 / 11
    assert pooled["part_detection_rate"] == 1 / 3 and pooled["part_false_reject_rate"] == 2 / 11


def test_class_thresholds_spend_the_false_reject_budget_where_it_detects_most():
    from station.vision.evaluate import at_thresholds, class_thresholds

    # 100 good images: "fray" fires on ten of them at 0.8-0.89 (tile corners), "blowhole" on one at 0.5
    good = [_result("free", 0.8 + i / 100, f"g{i}", "fray") for i in range(10)]
    good += [_result("free", 0.5, "g10", "blowhole")] + [_result("free", 0.0, f"g{i}", None) for i in range(11, 100)]
    # defects: five faint blowholes at 0.2-0.4, two frays at 0.7 (below the good corners), one fray at 0.95
    bad = [_result("blowhole", 0.2 + i / 20, f"b{i}", "blowhole") for i in range(5)]
    bad += [_result("fray", 0.7, "f1", "fray"), _result("fray", 0.7, "f2", "fray"), _result("fray", 0.95, "f3", "fray")]
    t = class_thresholds(good + bad, "free", ["blowhole", "fray"], max_false_reject=0.01)
    # the one allowed false reject is spent on blowhole (5 more found), not on fray (none more found)
    assert t == {"blowhole": 0.0, "fray": 0.89}
    judged = at_thresholds(good + bad, t)
    assert sum(r.rejected for r in judged[:100]) == 1
    assert [r.rejected for r in judged[100:]] == [True] * 5 + [False, False, True]
    # one threshold for all classes would have had to sit at 0.88: no blowhole found
    assert not any(r.score > 0.88 for r in bad[:5])


def test_threshold_for_parts_holds_the_false_reject_budget_per_part_too():
    from station.vision.evaluate import cross_fitted, threshold_for

    # 200 good images = 50 good parts of 4 views; four parts each have one view at 0.6-0.9,
    # the rest score 0.1: 2 % of the images (allowed: 2) but 8 % of the parts (allowed: 0)
    good = [_result("good", 0.1, f"p{p}") for p in range(50) for _ in range(3)]
    good += [_result("good", s, f"p{p}") for p, s in zip(range(50), [0.9, 0.8, 0.7, 0.6] + [0.1] * 46)]
    bad = [_result("crack", s, f"d{i}") for i, s in enumerate((0.95, 0.85, 0.75, 0.5))]
    assert threshold_for(good + bad, "good") == 0.7  # per image: the two views above 0.7 are the 1 %
    assert threshold_for(good + bad, "good", per_part=True) == 0.9  # per part: no good part may go
    # without groups every row is its own part: the same as per image
    ungrouped = [_result(r.truth, r.score, f"row{i}") for i, r in enumerate(good + bad)]
    assert threshold_for(ungrouped, "good", per_part=True) == 0.7
    out = cross_fitted([good + bad, good + bad], "good", grouped=True, per_part=True)
    assert out["thresholds"] == [{"crack": 0.9}, {"crack": 0.9}] and "good parts" in out["rule"]
    assert out["pooled"]["part_false_reject_rate"] == 0.0 and out["pooled"]["detection_rate"] == 0.25


# ---- review band: escape and review rates, the band for a target escape rate (issue 22) -------------
def test_escape_and_review_rates_per_image_and_per_part():
    from dataclasses import replace

    from station.vision.evaluate import summarise

    # part d1: a rejected view and a reviewed one; d2: reviewed only; d3: nothing (escapes)
    # good part g1: one view reviewed; g2: rejected; g3, g4: passed
    def r(label, group, rejected=False, reviewed=False):
        return replace(_result(label, 0.5, group), rejected=rejected, reviewed=reviewed)

    results = [r("crack", "d1", rejected=True), r("crack", "d1", reviewed=True), r("crack", "d2", reviewed=True),
               r("crack", "d3"), r("good", "g1", reviewed=True), r("good", "g1"), r("good", "g2", rejected=True),
               r("good", "g3"), r("good", "g4")]
    m = summarise(results, [], "good", grouped=True)
    assert m["detection_rate"] == 1 / 4 and m["defective_review_rate"] == 2 / 4 and m["escape_rate"] == 1 / 4
    assert m["false_reject_rate"] == 1 / 5 and m["review_rate"] == 1 / 5
    assert m["part_detection_rate"] == 1 / 3 and m["part_defective_review_rate"] == 1 / 3 and m["part_escape_rate"] == 1 / 3
    assert m["part_false_reject_rate"] == 1 / 4 and m["part_review_rate"] == 1 / 4
    assert m["per_class"]["crack"]["escape_rate"] == 1 / 4 and m["per_class"]["good"]["review_rate"] == 1 / 5


def test_review_threshold_is_the_highest_that_keeps_escapes_within_the_target():
    from station.vision.evaluate import at_thresholds, review_threshold_for

    t = {"crack": 0.9}
    good = [_result("good", s, f"g{i}") for i, s in enumerate((0.1, 0.2, 0.3, 0.5, 0.7))]
    # ten defective images: one rejected (0.95), nine below the threshold; one has no finding at all
    bad = [_result("crack", s, f"d{i}") for i, s in enumerate((0.95, 0.8, 0.6, 0.55, 0.4, 0.35, 0.3, 0.25, 0.2))]
    bad.append(_result("crack", 0.0, "d9", None))
    # 20 % of 10 may escape: the no-finding one and 0.2; review above 0.2
    assert review_threshold_for(good + bad, "good", t, 0.2) == 0.2
    judged = at_thresholds(good + bad, t, 0.2)
    assert [x.reviewed for x in judged[:5]] == [False, False, True, True, True]  # the review band's cost: 3 good images
    assert sum(not x.rejected and not x.reviewed for x in judged[5:]) == 2
    # 50 %: review above 0.35; 0 %: unreachable (an image has no finding), so every finding is reviewed
    assert review_threshold_for(good + bad, "good", t, 0.5) == 0.35
    assert review_threshold_for(good + bad, "good", t, 0.0) == 0.0
    # a target met without a band: the threshold itself (an empty band)
    assert review_threshold_for(good + bad, "good", t, 1.0) == 0.9


def test_cross_fitted_review_band_is_chosen_on_the_other_folds():
    from station.vision.evaluate import cross_fitted

    fold_a = [_result("good", s, f"a{i}") for i, s in enumerate((0.1, 0.2, 0.3, 0.4, 0.5))]
    fold_a += [_result("crack", s, f"ad{i}") for i, s in enumerate((0.9, 0.45, 0.3, 0.05))]
    fold_b = [_result("good", s, f"b{i}") for i, s in enumerate((0.2, 0.3, 0.35, 0.6))]
    fold_b += [_result("crack", s, f"bd{i}") for i, s in enumerate((0.8, 0.5, 0.25, 0.15))]
    out = cross_fitted([fold_a, fold_b], "good", grouped=True, per_part=True, max_escape=0.25)
    # fold A is judged at B's threshold 0.6 with B's band: of B's 3 unrejected defects one (of 4) may escape -> > 0.15
    # fold B at A's 0.5 and A's band: of A's 3 unrejected (0.45, 0.3, 0.05) one may escape -> > 0.05
    assert out["thresholds"] == [{"crack": 0.6}, {"crack": 0.5}] and out["review_thresholds"] == [0.15, 0.05]
    a, b = out["per_fold"]
    assert a["detection_rate"] == 0.25 and a["escape_rate"] == 0.25 and a["review_rate"] == 4 / 5
    assert b["detection_rate"] == 0.25 and b["escape_rate"] == 0.0 and b["review_rate"] == 3 / 4
    assert "25% of the other folds' defective images and parts escape" in out["rule"]


def test_wilson_interval_matches_the_textbook_formula():
    from station.vision.evaluate import wilson_interval

    z = 1.959964
    for k, n in [(1, 100), (0, 104), (3, 662), (52, 52)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        assert wilson_interval(k, n) == pytest.approx([centre - half, centre + half], abs=1e-6)
    assert wilson_interval(1, 100) == pytest.approx([0.0018, 0.0545], abs=1e-4)  # 1 % on 100 parts: up to 5 %
    assert wilson_interval(0, 0) is None


def test_part_auroc_scores_each_part_by_its_best_view():
    from station.vision.evaluate import cross_fitted, part_auroc, summarise

    # good parts g1 (views 0.1, 0.2) and g2 (0.6, 0.05); defective d1 (a good-looking view 0.3 and a
    # crack 0.5: the part is defective, scored 0.5) and d2 (0.9). Parts: 0.5 and 0.9 against 0.2 and
    # 0.6 -> 3 of 4 pairs ranked right. Images: 0.5 and 0.9 against 0.1, 0.2, 0.6, 0.05, 0.3 -> 9 of 10.
    fold_a = [_result("free", 0.1, "g1"), _result("free", 0.2, "g1"), _result("free", 0.3, "d1"), _result("crack", 0.5, "d1")]
    fold_b = [_result("free", 0.6, "g2"), _result("free", 0.05, "g2"), _result("crack", 0.9, "d2")]
    results = fold_a + fold_b
    assert part_auroc(results, "free") == pytest.approx(0.75)
    m = summarise(results, [], "free", grouped=True)
    assert m["part_auroc"] == pytest.approx(0.75) and m["auroc"] == pytest.approx(0.9)
    assert "part_auroc" not in summarise(results, [], "free", grouped=False)
    # a tie between a defective and a good part counts half; one kind of part only: no AUROC
    assert part_auroc([_result("free", 0.5, "g"), _result("crack", 0.5, "d")], "free") == pytest.approx(0.5)
    assert part_auroc(fold_a[:2], "free") is None
    # pooled over the held-out folds of a cross-validation (the thresholds do not change a ranking), and per fold
    fitted = cross_fitted([fold_a, fold_b], "free", True, per_part=True)
    assert fitted["pooled"]["part_auroc"] == pytest.approx(0.75)
    assert summarise(fold_a, [], "free", True)["part_auroc"] == pytest.approx(1.0)
    assert summarise(fold_b, [], "free", True)["part_auroc"] == pytest.approx(1.0)
