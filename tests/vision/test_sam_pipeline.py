"""The shipped magnetic-tile recipe on real tiles with the real models: the committed proposal
and classifier ONNX files plus the LiteMedSAM pair, all run through ONNX Runtime."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.inspection import Inspection, Outcome, Verdict, View
from station.models_store import ensure_recipe_models
from station.recipe import load_recipe
from station.stages import inspect_views
from station.vision.inspector import build_inspector
from station.vision.regions import box_of

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE = REPO_ROOT / "recipes" / "magnetic-tile-nets.toml"


@pytest.fixture(scope="module")
def tile_rows(shared_dir):
    data = shared_dir / "data" / "magnetic-tile-train"
    rows = list(csv.DictReader(open(data / "manifest.csv")))
    pick = [next(r for r in rows if r["class"] == c) for c in ("blowhole", "crack", "uneven", "free")]
    return [(data / r["image"], data / r["mask"], r["class"]) for r in pick]


@pytest.fixture(scope="module")
def models(sam_models_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("mt-models")
    for f in sam_models_dir.iterdir():
        shutil.copy(f, d / f.name)
    ensure_recipe_models(RECIPE, d)  # the committed recipe models, from models/trained
    return d


@pytest.fixture(scope="module")
def inspector(models, tmp_path_factory):
    # a lower operating point than shipped, so that SAM outlines are exercised on these tiles
    import re

    path = tmp_path_factory.mktemp("recipe") / "magnetic-tile-nets.toml"
    path.write_text(re.sub(r"^min_confidence = .*$", "min_confidence = 0.5", RECIPE.read_text(), flags=re.M))
    return build_inspector(load_recipe(path), models, threads=2)


def run(inspector, image: np.ndarray) -> Inspection:
    insp = inspect_views(inspector.loaded, inspector, [View("top", image)])
    assert insp.failure is None, insp.failure
    return insp


def test_real_tiles_give_consistent_defects_verdicts_and_overlays(inspector, tile_rows):
    recipe = inspector.recipe
    names = {c.name for c in recipe.classes}
    encodes = {"n": 0}
    encoder = inspector.analyzer.segmenter.encoder
    real_run = encoder.run

    def counting_run(inputs):  # a spy on the real encoder: counts runs, changes nothing
        encodes["n"] += 1
        return real_run(inputs)

    encoder.run = counting_run
    try:
        for image_path, _, truth in tile_rows:
            image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
            before = encodes["n"]
            insp = run(inspector, image)
            assert isinstance(insp.verdict, Verdict)
            assert insp.overlay.shape == image.shape + (3,) and insp.overlay.dtype == np.uint8
            assert set(insp.model_hashes) == {*(e.model for e in recipe.vision.proposals), "magnetic-tile-classifier", "litemedsam",
                                              "litemedsam_decoder"}
            for d in insp.defects:
                assert d.class_name in names and 0.0 <= d.confidence <= 1.0
                assert d.mask.shape == image.shape and d.area_px == int(d.mask.sum()) > 0
                assert d.box == box_of(d.mask)
            sam_defects = [d for d in insp.defects if recipe.defect_class(d.class_name).mask_source == "sam"
                           and d.confidence >= recipe.min_confidence_of(recipe.defect_class(d.class_name))]
            # one encoder run per view at most, however many prompts it had (and always one when a
            # proposal model is a head on the SAM embedding: the outlines reuse that run)
            needs_encoding = bool(sam_defects) or inspector.analyzer.proposals.embedding_input
            assert encodes["n"] - before == (1 if needs_encoding else 0)
            if insp.verdict.outcome is Outcome.REJECT:
                assert insp.verdict.top_defect in insp.defects and insp.verdict.plc_code == recipe.defect_class(insp.verdict.top_defect.class_name).plc_code
            else:
                assert insp.verdict.plc_code == 0
        assert encodes["n"] >= 1, "no SAM outline was exercised on these tiles"
    finally:
        encoder.run = real_run


def test_two_threads_agree_with_one(inspector, tile_rows):
    images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p, _, _ in tile_rows[:3]]
    serial = [run(inspector, im).verdict.reason for im in images]
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda im: run(inspector, im).verdict.reason, images)) == serial


def test_station_inspect_writes_overlays(models, tile_rows, tmp_path):
    paths = [str(p) for p, _, _ in tile_rows[:2]]
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "inspect", "--recipe", "magnetic-tile-nets", "--models-dir", str(models),
         "--overlay", str(tmp_path / "ov"), *paths],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = sorted((tmp_path / "ov").glob("*_overlay.png"))
    assert len(written) == 2
    for f, src in zip(written, sorted(paths, key=lambda p: Path(p).stem)):
        ov = cv2.imread(str(f))
        assert ov.shape[:2] == cv2.imread(src, cv2.IMREAD_GRAYSCALE).shape
