"""The proposal head on SAM embeddings: cell labels, the map back to view pixels, training on
embeddings where defect cells differ, export to ONNX, the refusals, and the real LiteMedSAM
encoder feeding a trained head through the analyzer."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from station.inference.metadata import ModelError, ModelMetadata, sha256_file
from station.inference.onnx import OnnxModel
from station.vision.proposals import BACKGROUND, ProposalStage, embedding_map_to_view
from station.vision.segmentation import EncodedView

torch = pytest.importorskip("torch")

from station.models.train.sam_head import (
    IGNORE,
    EncodedSample,
    cell_targets,
    export_sam_head,
    train_sam_head,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
C, G = 16, 16  # small stand-in embeddings: 16 channels on a 16x16 grid over a 64 px input


def encoded_view(embedding: np.ndarray, view_hw: tuple[int, int], input_size: int) -> EncodedView:
    h, w = view_hw
    s = input_size / max(h, w)
    nh, nw = round(h * s), round(w * s)
    return EncodedView(embedding, view_hw, (nh, nw), nw / w, nh / h, input_size)


def test_cell_targets_label_covered_cells_ignore_slivers_and_padding():
    mask = np.zeros((32, 64), bool)  # a 2:1 view: in a 64 px input it fills rows 0..31
    mask[0:8, 0:8] = True  # two full cells (4 px cells after the 1:1 resize... 64/16 = 4 px)
    mask[20, 40] = True  # one pixel: 1/16 of a cell
    t = cell_targets(mask, 3, (32, 64), 64, G)
    assert t.shape == (G, G)
    assert (t[0:2, 0:2] == 3).all()
    assert t[5, 10] == IGNORE  # the sliver is neither defect nor background
    assert t[3, 3] == 0 and t[7, 15] == 0
    assert (t[8:] == IGNORE).all()  # below the image: encoder padding
    good = cell_targets(None, 0, (32, 64), 64, G)
    assert (good[:8] == 0).all() and (good[8:] == IGNORE).all()


def test_embedding_map_lands_on_the_view_and_drops_the_padding():
    view_hw = (100, 200)  # longest side 200 -> 64: the image fills the top 32 rows of the input
    grid = np.zeros((2, G, G), np.float32)
    grid[0] = 1.0
    grid[:, 4, 8] = (0.0, 1.0)  # a defect cell: model px 16..20, 32..36
    grid[:, 12, 8] = (0.0, 1.0)  # a "defect" in the padding: not part of the view
    enc = encoded_view(np.zeros((1, C, G, G), np.float32), view_hw, 64)
    view = embedding_map_to_view(grid, enc)
    assert view.shape == (2, 100, 200)
    y, x = np.unravel_index(np.argmax(view[1]), view[1].shape)
    # cell centre (18, 34) model px -> (18, 34) / 0.32 view px
    assert abs(y - 18 / 0.32) <= 4 and abs(x - 34 / 0.32) <= 4
    assert view[1, 90:, :].max() < 0.05  # the padding cell leaked nowhere into the bottom rows


def synthetic_set(rng: np.random.Generator, n: int) -> list[EncodedSample]:
    """Embeddings whose defect cells carry a shift along channels 0..3 (and noise elsewhere)."""
    out = []
    for i in range(n):
        emb = rng.normal(0, 1, (C, G, G)).astype(np.float32)
        label = i % 2
        mask = np.zeros((64, 64), bool)
        if label:
            y, x = rng.integers(0, G - 2, 2)
            mask[4 * y : 4 * y + 8, 4 * x : 4 * x + 8] = True
            emb[:4, y : y + 2, x : x + 2] += 3.0
        out.append(EncodedSample(emb.astype(np.float16), cell_targets(mask, label, (64, 64), 64, G), label))
    return out


def export(net, tmp_path: Path, extra: dict) -> OnnxModel:
    path = tmp_path / "head.onnx"
    export_sam_head(net, path, C, G)
    meta = ModelMetadata(name="head", role="proposals", file=path.name, sha256=sha256_file(path),
                         classes=[BACKGROUND, "blowhole"], extra=extra)
    return OnnxModel(path, meta)


@pytest.mark.training
def test_trained_head_finds_the_shifted_cells_of_parts_it_has_not_seen(tmp_path):
    rng = np.random.default_rng(0)
    net = train_sam_head(synthetic_set(rng, 48), 1, seed=0, epochs=25)
    stage = ProposalStage(export(net, tmp_path, {"input": "sam_embedding", "encoder_sha256": "ab" * 32}), ["blowhole"])
    good_scores, bad_scores = [], []
    for s in synthetic_set(np.random.default_rng(1), 20):
        enc = encoded_view(s.embedding[None].astype(np.float32), (64, 64), 64)
        probs = stage.probabilities(np.zeros((64, 64), np.uint8), encoded=enc)
        (bad_scores if s.label else good_scores).append(float(1 - probs[0].min()))
        if s.label:
            found = stage.find(np.zeros((64, 64), np.uint8), 0.5, 4, encoded=enc)
            truth = np.kron(s.target == 1, np.ones((4, 4), bool))
            assert found and (found[0].mask & truth).any()
    assert min(bad_scores) > max(good_scores)


def test_heads_without_their_encoder_or_without_an_encoding_are_refused(tmp_path):
    net = train_sam_head(synthetic_set(np.random.default_rng(0), 4), 1, epochs=1)
    with pytest.raises(ModelError, match="encoder_sha256"):
        ProposalStage(export(net, tmp_path, {"input": "sam_embedding"}), ["blowhole"])
    stage = ProposalStage(export(net, tmp_path, {"input": "sam_embedding", "encoder_sha256": "ab" * 32}), ["blowhole"])
    with pytest.raises(ValueError, match="encode the view first"):
        stage.probabilities(np.zeros((64, 64), np.uint8))


def test_the_analyzer_refuses_a_head_trained_on_another_encoders_embeddings(tmp_path, sam_models_dir):
    from station.recipe import load_recipe
    from station.vision.sam_analyzer import load_sam_analyzer

    models = tmp_path / "models"
    shutil.copytree(sam_models_dir, models)
    encoder_sha = ModelMetadata.read(models / "litemedsam.json").sha256
    net = train_sam_head(synthetic_set(np.random.default_rng(0), 4), 1, epochs=1)
    export_sam_head(net, models / "head.onnx", C, G)
    from station.recipe import ProposalEntry

    shipped = load_recipe(REPO_ROOT / "recipes" / "magnetic-tile-nets.toml").recipe
    vision = shipped.vision.model_copy(update={"proposals": [ProposalEntry(kind="sam-head", model="head")], "classifier": None})
    recipe = shipped.model_copy(update={"vision": vision})
    for sha, ok in (("ab" * 32, False), (encoder_sha, True)):
        ModelMetadata(name="head", role="proposals", file="head.onnx", sha256=sha256_file(models / "head.onnx"),
                      classes=[BACKGROUND, "blowhole"], extra={"input": "sam_embedding", "encoder_sha256": sha, "net": "sam-head"}
                      ).write(models / "head.json")
        if ok:
            analyzer = load_sam_analyzer(recipe, models)
            assert analyzer.proposals.embedding_input and analyzer.segmenter is not None
        else:
            with pytest.raises(ModelError, match="retrain it"):
                load_sam_analyzer(recipe, models)
    # an encoder exported here (the same network, other bytes: not the sha256 the head names) is
    # refused, unless its metadata says it stands for that copy (its export was checked
    # numerically against the same checkpoint)
    import onnx

    meta = ModelMetadata.read(models / "litemedsam.json")
    exported = onnx.load(str(models / meta.file))
    exported.doc_string = "exported on this machine"
    (models / meta.file).unlink()  # a copy of the session's shared pair, not the pair itself
    onnx.save(exported, str(models / meta.file))
    other = meta.model_copy(update={"sha256": sha256_file(models / meta.file)})
    other.write(models / "litemedsam.json")
    assert other.sha256 != encoder_sha
    with pytest.raises(ModelError, match="retrain it"):
        load_sam_analyzer(recipe, models)
    other.model_copy(update={"extra": {**other.extra, "stands_for_sha256": [encoder_sha]}}).write(models / "litemedsam.json")
    assert load_sam_analyzer(recipe, models).proposals.embedding_input
