"""The real LiteMedSAM ONNX pair (pulled from ../shared/models): box prompts outline real
defects; one encoding serves every prompt; bad model files are refused when the recipe loads."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from station.inference.factory import load_model
from station.inference.metadata import ModelError
from station.recipe import load_recipe
from station.recipe_models import recipe_models
from station.vision.inspector import build_inspector
from station.vision.regions import components
from station.vision.segmentation import SamSegmenter

TILE = "data/magnetic-tile-train/MT_Blowhole/Imgs/exp1_num_36290"


@pytest.fixture(scope="module")
def segmenter(sam_models_dir):
    return SamSegmenter(load_model(sam_models_dir, "litemedsam", threads=2), load_model(sam_models_dir, "litemedsam_decoder", threads=2))


def test_box_prompt_outlines_a_real_blowhole(segmenter, shared_dir):
    image = cv2.imread(str(shared_dir / f"{TILE}.jpg"), cv2.IMREAD_GRAYSCALE)
    truth = cv2.imread(str(shared_dir / f"{TILE}.png"), cv2.IMREAD_GRAYSCALE) >= 128
    region = components(truth)[0]
    x0, y0, x1, y1 = region.box
    box = (x0 - 2, y0 - 2, x1 + 2, y1 + 2)
    encoded = segmenter.encode(image)
    assert encoded.embedding.shape == (1, 256, 64, 64)
    mask, iou_pred = segmenter.box_mask(encoded, box)
    assert mask.shape == image.shape
    iou = (mask & region.mask).sum() / (mask | region.mask).sum()
    filled = np.zeros_like(mask)
    filled[box[1] : box[3], box[0] : box[2]] = True
    filled_iou = (filled & region.mask).sum() / (filled | region.mask).sum()
    assert iou > 0.6 and iou > filled_iou, (iou, filled_iou)
    assert 0 < iou_pred <= 1.5
    # the same encoding answers a second prompt elsewhere: a different, smaller mask there
    other, _ = segmenter.box_mask(encoded, (0, 0, 40, 40))
    assert not (other & region.mask).any()


def _magnetic_recipe(repo_root, tmp_path, models: str):
    text = (repo_root / "recipes" / "magnetic-tile-nets.toml").read_text()
    path = tmp_path / "magnetic-tile-nets.toml"
    path.write_text(text)
    return load_recipe(path)


def test_checksum_mismatch_is_refused_when_the_recipe_loads(sam_models_dir, tmp_path, repo_root):
    models = tmp_path / "models"
    shutil.copytree(sam_models_dir, models)
    enc = models / "litemedsam_encoder.onnx"
    data = bytearray(enc.read_bytes())
    data[1000] ^= 0xFF
    enc.write_bytes(bytes(data))
    loaded = load_recipe(repo_root / "recipes" / "magnetic-tile-nets.toml")
    from station.models_store import pull

    for name in recipe_models(loaded.recipe).names[1:]:  # all but the (corrupted) SAM encoder
        pull(name, models)
    with pytest.raises(ModelError, match="sha256 .* refusing to load"):
        build_inspector(loaded, models)


def test_missing_and_corrupt_models_are_clear_errors(sam_models_dir, tmp_path, repo_root):
    loaded = load_recipe(repo_root / "recipes" / "magnetic-tile-nets.toml")
    with pytest.raises(ModelError, match="station models pull"):
        build_inspector(loaded, tmp_path / "empty")
    models = tmp_path / "models"
    shutil.copytree(sam_models_dir, models)
    from station.inference.metadata import ModelMetadata, sha256_file
    from station.models_store import pull

    for name in recipe_models(loaded.recipe).names[1:]:
        pull(name, models)
    # a file that is not ONNX at all, with metadata claiming its (matching) checksum
    meta_path = models / f"{loaded.recipe.vision.classifier}.json"
    meta = ModelMetadata.read(meta_path)
    (models / meta.file).write_bytes(b"garbage")
    meta.model_copy(update={"sha256": sha256_file(models / meta.file)}).write(meta_path)
    with pytest.raises(ModelError, match="cannot load"):
        build_inspector(loaded, models)


def test_native_resolution_window_mode_outlines_the_same_blowhole(segmenter, shared_dir, repo_root):
    from station.vision.sam_analyzer import SamAnalyzer

    image = cv2.imread(str(shared_dir / f"{TILE}.jpg"), cv2.IMREAD_GRAYSCALE)
    truth = cv2.imread(str(shared_dir / f"{TILE}.png"), cv2.IMREAD_GRAYSCALE) >= 128
    region = components(truth)[0]
    x0, y0, x1, y1 = region.box
    recipe = load_recipe(repo_root / "recipes" / "magnetic-tile-nets.toml").recipe
    analyzer = SamAnalyzer(recipe, proposals=None, classifier=None, segmenter=segmenter, model_hashes={})
    mask = analyzer._crop_mask(image, (x0 - 2, y0 - 2, x1 + 2, y1 + 2), side_px=96)
    assert mask.shape == image.shape
    assert (mask & region.mask).sum() / (mask | region.mask).sum() > 0.5
