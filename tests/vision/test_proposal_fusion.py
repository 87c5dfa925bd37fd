"""Several proposal models fused per pixel (recipe ``vision.proposals`` entries of one
``opinion``), and opinions of such (entries of several opinions, the surest counts): the rules,
both over real ONNX models, their refusals, and the analyzer loading them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from station.inference.metadata import InputSpec, ModelError, ModelMetadata, sha256_file
from station.inference.onnx import OnnxModel
from station.recipe import load_recipe
from station.vision.proposals import (
    BACKGROUND,
    ProposalEnsemble,
    ProposalOpinions,
    ProposalStage,
    fuse,
    surest,
)

torch = pytest.importorskip("torch")

REPO_ROOT = Path(__file__).resolve().parents[2]


def two_class_map(defect: np.ndarray, blowhole_share: float = 1.0) -> np.ndarray:
    """[3, H, W]: background, blowhole, crack with the given defect probability."""
    return np.stack([1 - defect, defect * blowhole_share, defect * (1 - blowhole_share)]).astype(np.float32)


def test_fusion_adds_log_odds_and_weights_classes_by_confidence():
    d_a = np.array([[0.7, 0.9, 0.1, 0.5]])
    d_b = np.array([[0.7, 0.5, 0.1, 0.5]])
    fused = fuse([two_class_map(d_a, 1.0), two_class_map(d_b, 0.0)])
    defect = 1 - fused[0, 0]
    assert defect[0] == pytest.approx(0.49 / (0.49 + 0.09), abs=1e-5)  # two half-sure models: sure
    assert defect[1] == pytest.approx(0.9, abs=1e-5)  # a model at 0.5 changes nothing
    assert defect[2] == pytest.approx(0.01 / (0.01 + 0.81), abs=1e-5)  # both say background
    assert defect[3] == pytest.approx(0.5, abs=1e-5)
    assert np.allclose(fused.sum(axis=0), 1.0, atol=1e-5)
    # where A (blowhole) is surer than B (crack), the fused class leans to blowhole
    assert fused[1, 0, 1] > fused[2, 0, 1]
    assert fused[1, 0, 0] == pytest.approx(fused[2, 0, 0], abs=1e-5)
    one = two_class_map(d_a)
    assert fuse([one]) is one


def test_opinions_keep_per_pixel_the_surest_map_with_its_own_classes():
    a = two_class_map(np.array([[0.7, 0.2, 0.05]]), 1.0)  # says blowhole
    b = two_class_map(np.array([[0.4, 0.9, 0.05]]), 0.0)  # says crack
    out = surest([a, b])
    assert np.allclose(1 - out[0, 0], [0.7, 0.9, 0.05])  # no vote: the surer one, whoever it is
    assert np.allclose(out[:, 0, 0], a[:, 0, 0]) and np.allclose(out[:, 0, 1], b[:, 0, 1])  # its classes too
    assert np.allclose(out.sum(axis=0), 1.0, atol=1e-6)
    assert surest([a]) is a


class DarkBelow(torch.nn.Module):
    """A stand-in proposal net on the grey view: p(blowhole) = ``peak`` (0.7) where the grey is
    below ``level``, 0.05 elsewhere (a steep sigmoid, so exported as ordinary ONNX ops)."""

    def __init__(self, level: float, peak: float = 0.7):
        super().__init__()
        self.level, self.peak = level, peak

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        d = 0.05 + (self.peak - 0.05) * torch.sigmoid(200.0 * (self.level - image))
        return torch.cat([1 - d, d], dim=1)


def grey_model(tmp_path: Path, name: str, level: float, classes=(BACKGROUND, "blowhole"), extra=None, peak: float = 0.7) -> OnnxModel:
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(DarkBelow(level, peak), (torch.zeros(1, 1, 8, 8),), str(path), input_names=["image"], output_names=["probs"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={"image": {2: "h", 3: "w"}, "probs": {2: "h", 3: "w"}})
    meta = ModelMetadata(name=name, role="proposals", file=path.name, sha256=sha256_file(path), classes=list(classes),
                         extra=extra or {"input": "grey", "stride": 1, "net": "unet"})
    meta.write(tmp_path / f"{name}.json")
    return OnnxModel(path, meta)


def part_with_two_marks() -> np.ndarray:
    grey = np.full((60, 80), 255, np.uint8)
    grey[10:20, 10:20] = 77  # 0.3: dark for both models
    grey[35:45, 50:60] = 153  # 0.6: dark only for the model with level 0.75
    return grey


def test_ensemble_finds_what_both_models_half_see_and_drops_what_only_one_sees(tmp_path):
    a = ProposalStage(grey_model(tmp_path, "a", 0.5), ["blowhole"])
    b = ProposalStage(grey_model(tmp_path, "b", 0.75), ["blowhole"])
    grey = part_with_two_marks()
    for alone in (a, b):  # 0.7 at most: below the 0.8 threshold on its own
        assert alone.find(grey, 0.8, 8) == []
    ensemble = ProposalEnsemble([a, b])
    found = ensemble.find(grey, 0.8, 8)
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    assert x0 >= 8 and y0 >= 8 and x1 <= 22 and y1 <= 22 and found[0].score > 0.8
    assert ensemble.classes == ["blowhole"] and not ensemble.embedding_input and not ensemble.feature_input


def test_ensemble_refuses_models_that_do_not_fit_together(tmp_path):
    a = ProposalStage(grey_model(tmp_path, "a", 0.5), ["blowhole", "crack"])
    c = ProposalStage(grey_model(tmp_path, "c", 0.5, classes=(BACKGROUND, "crack")), ["blowhole", "crack"])
    with pytest.raises(ModelError, match="do not share their classes"):
        ProposalEnsemble([a, c])
    heads = [ProposalStage(grey_model(tmp_path, f"h{i}", 0.5, extra={"input": "sam_embedding", "encoder_sha256": sha}),
                           ["blowhole"]) for i, sha in enumerate(("ab" * 32, "cd" * 32))]
    with pytest.raises(ModelError, match="different encoders"):
        ProposalEnsemble(heads)
    grey = ProposalStage(grey_model(tmp_path, "g", 0.5), ["blowhole"])
    assert ProposalEnsemble([heads[0], grey]).encoder_sha256 == "ab" * 32
    # opinions check every model inside them, not only their own parts
    with pytest.raises(ModelError, match="different encoders"):
        ProposalOpinions([ProposalEnsemble([heads[0], grey]), heads[1]])
    with pytest.raises(ModelError, match="do not share their classes"):
        ProposalOpinions([a, c])
    assert ProposalOpinions([ProposalEnsemble([heads[0], grey]), grey]).encoder_sha256 == "ab" * 32


def test_a_second_opinion_keeps_what_a_product_would_veto(tmp_path):
    a = ProposalStage(grey_model(tmp_path, "a", 0.5), ["blowhole"])  # sure the lighter mark is background (0.05)
    b = ProposalStage(grey_model(tmp_path, "b", 0.75), ["blowhole"])
    c = ProposalStage(grey_model(tmp_path, "c", 0.75, peak=0.95), ["blowhole"])  # sure of both marks
    grey = part_with_two_marks()
    vetoed = ProposalEnsemble([a, b, c]).find(grey, 0.8, 8)
    assert [p.box[0] < 30 for p in vetoed] == [True]  # a's "background" outvotes c on the lighter mark
    opinions = ProposalOpinions([ProposalEnsemble([a, b]), c])
    found = sorted(opinions.find(grey, 0.8, 8), key=lambda p: p.box[0])
    assert len(found) == 2
    assert found[0].box[2] <= 22 and found[1].box[0] >= 48 and found[1].box[2] <= 62
    assert found[1].score == pytest.approx(0.95, abs=0.02)  # c's own certainty, not a vote
    assert not opinions.embedding_input and not opinions.feature_input
    # on plain background each opinion says its own: the product ~0.003, c 0.05, so 0.05
    background = 1 - opinions.probabilities(grey)[0, 55, 75]
    assert background == pytest.approx(0.05, abs=0.005)
    assert 1 - ProposalEnsemble([a, b]).probabilities(grey)[0, 55, 75] < 0.005


def test_recipe_proposal_entries_name_kind_and_model_group_by_opinion_and_never_repeat(tmp_path):
    from station.config_errors import ConfigError

    recipe = load_recipe(REPO_ROOT / "recipes" / "magnetic-tile-nets.toml").recipe
    opinions = recipe.vision.opinions
    assert [[(e.kind, e.model) for e in o] for o in opinions] == [
        [("pixel-mlp", "magnetic-tile-proposals-pixel-mlp"), ("sam-head", "magnetic-tile-proposals-sam-head")],
        [("sam-context-head", "magnetic-tile-proposals-sam-context-head")]]
    assert recipe.vision.proposals_on_sam_embedding
    text = (REPO_ROOT / "recipes" / "magnetic-tile-nets.toml").read_text()
    path = tmp_path / "r.toml"
    for old, new, why in (
        ('model = "magnetic-tile-proposals-sam-head"', 'model = "magnetic-tile-proposals-pixel-mlp"', "named twice"),
        ('kind = "sam-head"', 'kind = "yolo"', "vision.proposals[1].kind"),
        ('opinion = 2', 'opinion = 0', "vision.proposals[2].opinion"),
    ):
        path.write_text(text.replace(old, new))
        with pytest.raises(ConfigError, match=re.escape(why)):
            load_recipe(path)
    # a proposals list on a threshold recipe, or none on a SAM recipe: refused with the key
    path.write_text(re.sub(r"(?ms)^\[\[vision\.proposals\]\].*?(?=^\[\[classes)", "", text))
    with pytest.raises(ConfigError, match="vision.proposals: Field required"):
        load_recipe(path)
    path.write_text(text.replace('analyzer = "sam"', 'analyzer = "threshold"'))
    with pytest.raises(ConfigError, match="vision.segmentation: unknown key"):
        load_recipe(path)


def test_a_model_of_another_kind_than_the_recipe_says_is_refused(tmp_path, sam_models_dir):
    from station.vision.sam_analyzer import load_sam_analyzer

    models = tmp_path / "models"
    shutil.copytree(sam_models_dir, models)
    grey_model(models, "a", 0.5)  # a "unet" by its metadata
    recipe = stand_in_recipe(tmp_path, [["a"]], 0.6, kind="pixel-mlp")
    with pytest.raises(ModelError, match="the recipe names it a 'pixel-mlp' proposal model, its metadata says 'unet'"):
        load_sam_analyzer(recipe, models)


def stand_in_recipe(tmp_path: Path, opinions: list[list[str]], threshold: float, classifier: str | None = None,
                    kind: str = "unet", **vision):
    """The shipped magnetic-tile recipe on stand-in models: proposal models by name in
    ``opinions`` (each of ``kind``), the ``classifier`` (None: no classifier), the given proposal
    threshold, every class counting from confidence 0.5, and ``vision`` settings in place of
    the recipe's own; written as a file would be (station.recipe_file) and loaded back."""
    from station.recipe import ProposalEntry
    from station.recipe_file import recipe_text

    shipped = load_recipe(REPO_ROOT / "recipes" / "magnetic-tile-nets.toml")
    entries = [ProposalEntry(kind=kind, model=m, opinion=i) for i, o in enumerate(opinions, 1) for m in o]
    updated = shipped.recipe.vision.model_copy(update={"proposals": entries, "classifier": classifier,
                                                       "proposal_threshold": threshold, **vision})
    recipe = shipped.recipe.model_copy(update={"vision": updated, "min_confidence": 0.5})
    (tmp_path / "r.toml").write_text(recipe_text(recipe, shipped.text))
    return load_recipe(tmp_path / "r.toml").recipe


def test_the_analyzer_loads_a_recipe_with_two_proposal_models_and_outlines_the_fused_finding(tmp_path, sam_models_dir):
    from station.inspection import View
    from station.vision.sam_analyzer import load_sam_analyzer

    models = tmp_path / "models"
    shutil.copytree(sam_models_dir, models)
    grey_model(models, "a", 0.5)
    grey_model(models, "b", 0.75)
    recipe = stand_in_recipe(tmp_path, [["a", "b"]], 0.8)
    analyzer = load_sam_analyzer(recipe, models)
    assert isinstance(analyzer.proposals, ProposalEnsemble)
    defects = analyzer.find(View(camera="top", image=part_with_two_marks()))
    assert [d.class_name for d in defects] == ["blowhole"]
    _, _, x1, y1 = defects[0].box
    assert x1 <= 25 and y1 <= 25  # the mark both models half-see, not the one only b sees


def test_the_analyzer_loads_a_recipe_with_two_opinions_and_keeps_the_second_ones_finding(tmp_path, sam_models_dir):
    from station.inspection import View
    from station.vision.sam_analyzer import load_sam_analyzer

    models = tmp_path / "models"
    shutil.copytree(sam_models_dir, models)
    grey_model(models, "a", 0.5)
    grey_model(models, "b", 0.75)
    grey_model(models, "c", 0.75, peak=0.95)
    analyzer = load_sam_analyzer(stand_in_recipe(tmp_path, [["a", "b"], ["c"]], 0.8), models)
    assert isinstance(analyzer.proposals, ProposalOpinions)
    assert set(analyzer.model_hashes) >= {"a", "b", "c"}
    defects = analyzer.find(View(camera="top", image=part_with_two_marks()))
    assert sorted(d.box[0] < 30 for d in defects) == [False, True]  # both marks: c's is not vetoed by a


class SaysNotADefect(torch.nn.Module):
    """A stand-in region classifier: every crop is "not a defect" with p = 0.9."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.probs = torch.tensor([0.1 / n_classes] * n_classes + [0.9])

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.probs.expand(crops.shape[0], -1) + 0.0 * crops.mean()


def doubting_classifier(models: Path, classes: list[str]) -> None:
    path = models / "doubter.onnx"
    torch.onnx.export(SaysNotADefect(len(classes)), (torch.zeros(1, 2, 32, 32),), str(path), input_names=["crops"],
                      output_names=["probs"], opset_version=17, dynamo=False, dynamic_axes={"crops": {0: "n"}, "probs": {0: "n"}})
    ModelMetadata(name="doubter", role="classifier", file=path.name, sha256=sha256_file(path), classes=[*classes, "not_defect"],
                  input=InputSpec(size=32, channels=2, resize="stretch", normalization="scale", mean=[0.0] * 3, std=[255.0] * 3),
                  extra={"crop_context": 0.5}).write(models / "doubter.json")


@pytest.mark.parametrize("role", ["name-and-drop", "name"])
def test_classifier_role_decides_whether_not_a_defect_drops_the_region(tmp_path, sam_models_dir, role):
    from station.inspection import View
    from station.vision.sam_analyzer import load_sam_analyzer

    models = tmp_path / "models"
    shutil.copytree(sam_models_dir, models)
    grey_model(models, "a", 0.5)
    recipe = stand_in_recipe(tmp_path, [["a"]], 0.6, classifier="doubter", classifier_role=role)
    assert recipe.vision.classifier_role == role
    doubting_classifier(models, [c.name for c in recipe.classes])
    defects = load_sam_analyzer(recipe, models).find(View(camera="top", image=part_with_two_marks()))
    if role == "name-and-drop":
        assert defects == []  # p(not a defect) 0.9: dropped
    else:
        # kept, named from the proposal and the classifier together, at the proposal's own confidence
        assert [d.class_name for d in defects] == ["blowhole"]
        assert defects[0].confidence == pytest.approx(np.sqrt(defects[0].proposal_score), abs=1e-6)
        assert defects[0].proposal_score > 0.6


def part_with_edge_marks() -> np.ndarray:
    grey = np.full((60, 80), 255, np.uint8)
    grey[20:30, 0:3] = 77  # in the outer 3 px only: what a crop's border looks like to the nets
    grey[40:50, 68:80] = 77  # from inside the view up to its edge: a chip on the part's outline
    grey[10:20, 30:40] = 77  # well inside
    return grey


def test_edge_margin_seeds_no_region_at_the_views_edge_but_lets_inner_ones_reach_it(tmp_path):
    stage = ProposalStage(grey_model(tmp_path, "a", 0.5), ["blowhole"])
    grey = part_with_edge_marks()
    boxes = sorted(p.box for p in stage.find(grey, 0.6, 8))
    assert len(boxes) == 3 and boxes[0][0] == 0  # no margin: the edge mark too
    found = stage.find(grey, 0.6, 8, edge_margin_px=4)
    boxes = sorted(p.box for p in found)
    assert len(boxes) == 2
    assert boxes[0][0] >= 28 and boxes[0][2] <= 42  # the inner mark
    assert boxes[1][0] >= 64 and boxes[1][2] == 80  # the chip, grown to the edge
    assert all(0.6 < p.score <= 0.7 + 1e-6 for p in found)
    # a view smaller than the margin is still inspected (its centre), never skipped
    assert len(stage.find(np.full((6, 6), 77, np.uint8), 0.6, 8, edge_margin_px=10)) == 1


def test_the_recipes_edge_margin_reaches_the_analyzer(tmp_path, sam_models_dir):
    from station.inspection import View
    from station.vision.sam_analyzer import load_sam_analyzer

    models = tmp_path / "models"
    shutil.copytree(sam_models_dir, models)
    grey_model(models, "a", 0.5)
    found = {}
    for margin in (0, 4):
        recipe = stand_in_recipe(tmp_path, [["a"]], 0.6, edge_margin_px=margin)
        assert recipe.vision.edge_margin_px == margin
        found[margin] = load_sam_analyzer(recipe, models).find(View(camera="top", image=part_with_edge_marks()))
    assert len(found[0]) == 3 and len(found[4]) == 2
    assert min(d.box[0] for d in found[4]) >= 28


def test_outline_at_peak_tightens_a_nets_regions_outline_but_keeps_the_finding(tmp_path):
    stage = ProposalStage(grey_model(tmp_path, "a", 0.5), ["blowhole"])
    grey = part_with_edge_marks()
    grown = sorted(stage.find(grey, 0.6, 8), key=lambda f: f.box)
    tight = sorted(stage.find(grey, 0.6, 8, outline_at_peak=0.98), key=lambda f: f.box)
    assert len(grown) == len(tight) == 3 and [f.score for f in tight] == [f.score for f in grown]
    for g, t in zip(grown, tight):  # the blurred rim (below 98 % of the 0.7 peak) is left out, the core stays
        assert 0 < t.area_px == int(t.mask.sum()) < g.area_px and not (t.mask & ~g.mask).any()
        x0, y0, x1, y1 = t.box
        assert t.mask[y0:y1, x0:x1].sum() == t.area_px and g.box[0] <= x0 and x1 <= g.box[2]
