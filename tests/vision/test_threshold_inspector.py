"""The threshold analyzer end to end on simulated parts: verdicts and classes match the ground
truth; the inspector gives the same answers from three threads at once; overlays are drawn."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from station.camera.simulated import synthesize_part
from station.inspection import Defect, Inspection, Outcome, Verdict, View
from station.config_errors import ConfigError
from station.recipe import load_recipe
from station.stages import inspect_views
from station.vision.inspector import build_inspector
from station.vision.overlay import hex_rgb, render_overlay

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["scratch", "crack", "stain"]


@pytest.fixture(scope="module")
def demo():
    loaded = load_recipe(REPO_ROOT / "recipes" / "plate-threshold.toml")
    return loaded, build_inspector(loaded, Path("unused-models-dir"))


def inspect(inspector, loaded, image) -> Inspection:
    return inspect_views(loaded, inspector, [View("top", image)])


def test_simulated_parts_verdict_and_class_match_truth(demo):
    loaded, inspector = demo
    wrong = []
    for n in range(40):
        part = synthesize_part(seed=11, n=n, width=640, height=480, defect_rate=0.6, classes=CLASSES)
        insp = inspect(inspector, loaded, part.image)
        if part.truth_class == "good":
            ok = insp.verdict.outcome is Outcome.PASS and insp.verdict.plc_code == 0
        else:
            top = insp.verdict.top_defect
            ok = insp.verdict.outcome is Outcome.REJECT and top is not None and top.class_name == part.truth_class
            ok = ok and insp.verdict.plc_code == loaded.recipe.defect_class(part.truth_class).plc_code
            # the found region lies on the true defect
            ok = ok and bool((top.mask & part.masks[part.truth_class]).any())
        if not ok:
            wrong.append((n, part.truth_class, insp.verdict.reason))
    assert len(wrong) <= 1, wrong


def test_three_threads_give_the_same_verdicts_as_one(demo):
    loaded, inspector = demo
    images = [synthesize_part(5, n, 640, 480, 0.7, CLASSES).image for n in range(12)]
    serial = [inspect(inspector, loaded, im).verdict.reason for im in images]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(lambda im: inspect(inspector, loaded, im).verdict.reason, images * 2))
    assert threaded == serial * 2
    assert any(r != "no defect" for r in serial) and "no defect" in serial


def test_overlay_marks_defect_in_class_colour_with_verdict_banner(demo, tmp_path):
    loaded, inspector = demo
    n = next(n for n in range(50) if synthesize_part(3, n, 640, 480, 0.9, CLASSES).truth_class == "stain")
    part = synthesize_part(3, n, 640, 480, 0.9, CLASSES)
    insp = inspect(inspector, loaded, part.image)
    ov = insp.overlay
    assert ov.shape == (480, 640, 3) and ov.dtype == np.uint8
    d = insp.verdict.top_defect
    ys, xs = np.nonzero(d.mask)
    colour = np.array(hex_rgb(loaded.recipe.defect_class("stain").colour))
    inside = ov[ys, xs].astype(int)
    grey = np.repeat(part.image[ys, xs, :1].astype(int), 3, axis=1)
    # tinted towards the class colour: closer to it than the plain image was
    assert np.abs(inside - colour).sum(axis=1).mean() < np.abs(grey - colour).sum(axis=1).mean()
    # reject banner: red dominates the top rows
    top = ov[:5].reshape(-1, 3).mean(axis=0)
    assert top[0] > 150 and top[0] > 2 * top[1]
    good = render_overlay(np.full((100, 100), 128, np.uint8), [], loaded.recipe, inspector.decide([]))
    assert good[:3].reshape(-1, 3).mean(axis=0)[1] > good[:3].reshape(-1, 3).mean(axis=0)[0]  # green banner


def test_overlay_on_a_narrow_view_keeps_the_banner_readable(demo):
    loaded, _ = demo
    h, w = 320, 110  # a magnetic-tile view can be this narrow
    mask = np.zeros((h, w), bool)
    mask[2:12, 60:70] = True  # a defect touching the banner rows
    defect = Defect("top", "scratch", 0.87, (60, 2, 70, 12), int(mask.sum()), mask)
    verdict = Verdict(Outcome.PASS, "1 finding(s) below the recipe's limits")
    bar = 14
    plain = render_overlay(np.full((h, w), 60, np.uint8), [], loaded.recipe, verdict)[:bar]
    # the reason is shrunk or cut to the view's width: no text at the right edge
    assert not (plain[:, -4:] > 200).all(axis=2).any()
    assert (plain > 200).all(axis=2).any(), "banner text drawn"
    ov = render_overlay(np.full((h, w), 60, np.uint8), [defect], loaded.recipe, verdict)
    banner = ov[:bar]
    # the defect's label went below the banner, not over it (labels sit on black)
    assert not (banner == 0).all(axis=2).any()
    assert (ov[bar:] == 0).all(axis=2).any()


def test_labels_of_defects_close_together_do_not_cover_each_other():
    from station.vision.overlay import _label

    out = np.full((200, 110), 60, np.uint8)[..., None].repeat(3, axis=2)
    taken: list[tuple[int, int, int, int]] = []
    for text in ("break 0.87", "crack 0.72", "fray 0.66"):
        _label(out, text, 60, 40, (255, 149, 0), 0.35, 1, top=14, taken=taken)
    assert len(taken) == 3
    for i, a in enumerate(taken):
        assert a[1] >= 14  # never over the banner
        for b in taken[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_bad_images_are_refused_with_the_reason(demo):
    loaded, inspector = demo
    with pytest.raises(ValueError, match="bit depth"):
        inspector.preprocess([View("top", np.zeros((480, 640), np.uint16))])
    with pytest.raises(ValueError, match="too small"):
        inspector.preprocess([View("top", np.zeros((4, 4), np.uint8))])


def test_threshold_recipe_without_polarity_is_refused(tmp_path):
    text = (REPO_ROOT / "recipes" / "plate-threshold.toml").read_text()
    for line in ('polarity = "bright"\n', 'polarity = "dark"\n'):
        text = text.replace(line, "")
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"vision.blobs\[0\].polarity: Field required"):
        load_recipe(tmp_path / "r.toml")


def test_a_blob_rule_for_a_class_the_recipe_lacks_is_refused(tmp_path):
    text = (REPO_ROOT / "recipes" / "plate-threshold.toml").read_text().replace('class = "stain"', 'class = "dent"')
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(ConfigError, match="vision.blobs name classes the recipe does not have: \\['dent'\\]"):
        load_recipe(tmp_path / "r.toml")
