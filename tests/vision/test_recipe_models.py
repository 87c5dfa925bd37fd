"""Which models a recipe needs is one rule (station.recipe_models): what `station models pull`
fetches is exactly what the analyzer opens, for every shipped recipe."""

from __future__ import annotations

import pytest

from station.inference.metadata import ModelMetadata
from station.models_store import ensure_recipe_models
from station.recipe import load_recipe
from station.recipe_models import recipe_models
from station.vision.inspector import build_inspector
from tests.conftest import REPO_ROOT

SHIPPED = sorted(p.stem for p in (REPO_ROOT / "recipes").glob("*.toml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_models_pulled_for_a_shipped_recipe_are_the_models_its_analyzer_opens(name, tmp_path, shared_dir, monkeypatch):
    monkeypatch.setenv("STATION_MODEL_DIRS", str(shared_dir / "models"))
    loaded = load_recipe(REPO_ROOT / "recipes" / f"{name}.toml")
    pulled = {r.name for r in ensure_recipe_models(loaded.path, tmp_path)}
    inspector = build_inspector(loaded, tmp_path)
    assert set(inspector.model_hashes) == pulled
    for model, sha in inspector.model_hashes.items():  # the files it opened are the checked ones
        assert ModelMetadata.read(tmp_path / f"{model}.json").sha256 == sha


def test_sam_is_needed_only_to_outline_or_for_embedding_heads():
    tile = load_recipe(REPO_ROOT / "recipes" / "magnetic-tile-nets.toml").recipe
    steel = load_recipe(REPO_ROOT / "recipes" / "steel-strip.toml").recipe
    demo = load_recipe(REPO_ROOT / "recipes" / "demo-part.toml").recipe
    plain = load_recipe(REPO_ROOT / "recipes" / "plate-threshold.toml").recipe
    assert recipe_models(plain).names == []
    # the demo: SAM outlines its cracks and stains (its scratches by their proposal region)
    assert recipe_models(demo).names == ["litemedsam", "demo-part-proposals", "demo-part-classifier"]
    assert recipe_models(demo).sam_reasons == ("outlines crack, stain",)
    assert recipe_models(steel).segmentation is None  # every class outlined by its proposal region
    needs = recipe_models(tile)
    assert needs.segmentation == "litemedsam" and needs.names[0] == "litemedsam"
    assert any("embeddings" in r for r in needs.sam_reasons) and any("outlines" in r for r in needs.sam_reasons)
    # a tile recipe outlining nothing with SAM still needs the encoder for its embedding heads
    proposal_only = tile.model_copy(update={"classes": [c.model_copy(update={"mask_source": "proposal"}) for c in tile.classes]})
    assert recipe_models(proposal_only).segmentation == "litemedsam"
    # the shipped tile recipe: the backbone, its one trained head, and SAM to outline blowholes and cracks
    backbone = load_recipe(REPO_ROOT / "recipes" / "magnetic-tile.toml").recipe
    assert recipe_models(backbone).names == ["litemedsam", "efficientnet-lite0", "magnetic-tile-backbone-head"]
    assert recipe_models(backbone).sam_reasons == ("outlines blowhole, crack",)
