"""Issue 19.6: `station recipes check FILE` checks what a PLC LOAD_RECIPE would load.

The magnetic-tile-nets recipe with its real models (LiteMedSAM pair from ../shared/models,
the trained heads shipped in models/trained) pulled into a models dir; then each thing a
LOAD_RECIPE would trip on, one at a time: a model file changed (sha256), a model's metadata
missing, the SAM decoder missing, the encoder's metadata naming no decoder, a non-finite number.
Each is exit 2 with one line naming the file, the recipe key and the reason.
"""

from __future__ import annotations

import json
import shutil

import pytest

from station.cli import main
from station.models_store import ensure_recipe_models
from tests.conftest import REPO_ROOT

RECIPE = REPO_ROOT / "recipes" / "magnetic-tile-nets.toml"


@pytest.fixture(scope="module")
def pulled(tmp_path_factory, shared_dir):
    models = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STATION_MODEL_DIRS", str(shared_dir / "models"))
        ensure_recipe_models(RECIPE, models)
    return models


@pytest.fixture
def models(pulled, tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(pulled, copy)
    return copy


def check(capsys, *args) -> tuple[int, str]:
    code = main(["recipes", "check", *map(str, args)])
    out = capsys.readouterr()
    return code, (out.out + out.err).strip()


def test_a_complete_recipe_checks_ok(capsys, models):
    code, text = check(capsys, RECIPE, "--models-dir", models)
    assert code == 0, text
    assert "ok (magnetic-tile-nets" in text and "6 models" in text and "sha256 ok" in text


def test_a_station_file_gives_the_models_dir(capsys, models, tmp_path):
    station = tmp_path / "station.toml"
    station.write_text(f'active_recipe = "magnetic-tile"\nmodels_dir = "{models}"\n[[cameras]]\ntype = "simulated"\n')
    assert check(capsys, RECIPE, "--config", station)[0] == 0


def test_a_changed_model_file_names_file_key_and_reason(capsys, models):
    meta = json.loads((models / "magnetic-tile-classifier.json").read_text())
    with open(models / meta["file"], "ab") as f:
        f.write(b"\0")
    code, text = check(capsys, RECIPE, "--models-dir", models)
    assert code == 2
    assert f"{RECIPE}: vision.classifier: model magnetic-tile-classifier:" in text and "sha256" in text


def test_missing_metadata_of_a_proposal_model(capsys, models):
    (models / "magnetic-tile-proposals-sam-head.json").unlink()
    code, text = check(capsys, RECIPE, "--models-dir", models)
    assert code == 2 and f"{RECIPE}: vision.proposals[1].model: model magnetic-tile-proposals-sam-head:" in text


def test_the_sam_pair_must_be_complete(capsys, models):
    (models / "litemedsam_decoder.onnx").unlink()
    code, text = check(capsys, RECIPE, "--models-dir", models)
    assert code == 2 and f"{RECIPE}: vision.segmentation (its pair litemedsam_decoder): model litemedsam_decoder:" in text
    meta = json.loads((models / "litemedsam.json").read_text())
    meta.pop("pair")
    (models / "litemedsam.json").write_text(json.dumps(meta))
    code, text = check(capsys, RECIPE, "--models-dir", models)
    assert code == 2 and "vision.segmentation: model litemedsam: SAM encoder litemedsam names no decoder" in text


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_refused_with_file_and_key(capsys, models, tmp_path, value):
    bad = tmp_path / "magnetic-tile.toml"
    bad.write_text(RECIPE.read_text().replace("min_confidence = 0.9833", f"min_confidence = {value}", 1))
    code, text = check(capsys, bad, "--models-dir", models)
    assert code == 2 and f"{bad}: min_confidence: must be a finite number" in text, text


def test_the_backbone_recipe_names_its_backbone_and_head(capsys, tmp_path):
    """The shipped magnetic-tile recipe (analyzer "backbone") against an empty models dir: each
    model it would load is named with its recipe key."""
    shipped = REPO_ROOT / "recipes" / "magnetic-tile.toml"
    code, text = check(capsys, shipped, "--models-dir", tmp_path)
    assert code == 2
    for key, name in [("vision.segmentation", "litemedsam"), ("vision.backbone", "efficientnet-lite0"),
                      ("vision.head", "magnetic-tile-backbone-head")]:
        assert f"{shipped}: {key}: model {name}:" in text, text
