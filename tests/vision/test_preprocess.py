"""The recipe's [preprocess] options: scikit-image's equalize_adapthist validated at load and applied
by the inspector to real tile photos (grey and colour), exactly as scikit-image computes it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import exposure

from station.benchmarks.recipes import threshold_recipe_text
from station.config_errors import ConfigError
from station.inspection import View
from station.recipe import Preprocess, load_recipe
from station.vision.inspector import build_inspector
from station.vision.preprocess import preprocess_image

TILES = Path(__file__).resolve().parents[3] / "shared" / "data" / "magnetic-tile-train"
RECIPE = threshold_recipe_text("widget", ["scratch"], plc_id=7, budget_ms=800)


def tile_photo() -> np.ndarray:
    path = TILES / "MT_Blowhole" / "Imgs" / "exp1_num_308015.jpg"
    if not path.exists():
        pytest.skip(f"{path} is not here (the shared training data)")
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert grey is not None
    return grey


def write_recipe(tmp_path: Path, preprocess: str) -> Path:
    path = tmp_path / "widget.toml"
    path.write_text(RECIPE + "\n[preprocess]\n" + preprocess)
    return path


def test_equalize_adapthist_is_a_recipe_option_applied_by_the_inspector(tmp_path):
    loaded = load_recipe(write_recipe(tmp_path, "to_gray = true\nequalize_adapthist = true\nadapthist_clip_limit = 0.02\n"))
    spec = loaded.recipe.preprocess
    assert (spec.equalize_adapthist, spec.adapthist_clip_limit, spec.adapthist_kernel_px) == (True, 0.02, None)
    grey = tile_photo()
    inspector = build_inspector(loaded, Path("unused-models-dir"))
    [view] = inspector.preprocess([View("top", np.dstack([grey] * 3))])  # a colour camera image, made grey first
    expected = np.rint(exposure.equalize_adapthist(grey, clip_limit=0.02) * 255).astype(np.uint8)
    assert view.image.dtype == np.uint8 and view.image.shape == grey.shape
    assert np.abs(view.image.astype(int) - expected).max() <= 1
    # the tile photos are dark and flat: equalisation spreads them (what the option is for)
    assert view.image.std() > 1.5 * grey.std()


def test_equalize_adapthist_keeps_a_colour_view_coloured_and_its_kernel_counts():
    grey = tile_photo()
    rgb = np.dstack([grey, (grey * 0.5).astype(np.uint8), np.full_like(grey, 40)])
    out = preprocess_image(rgb, Preprocess(equalize_adapthist=True))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    hue_in = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 0].astype(int)
    hue_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[..., 0].astype(int)
    assert np.median(np.abs(hue_in - hue_out)) <= 2  # the value channel is equalised, not the hue
    small, large = (preprocess_image(grey, Preprocess(equalize_adapthist=True, adapthist_kernel_px=k)) for k in (16, 128))
    assert not np.array_equal(small, large)


def test_default_preprocess_leaves_the_view_alone():
    grey = tile_photo()
    assert np.array_equal(preprocess_image(grey, Preprocess()), grey)


@pytest.mark.parametrize("bad, key", [
    ("equalize_adapthist = true\nadapthist_clip_limit = 0\n", "preprocess.adapthist_clip_limit"),
    ("equalize_adapthist = true\nadapthist_clip_limit = 1.5\n", "preprocess.adapthist_clip_limit"),
    ("equalize_adapthist = true\nadapthist_kernel_px = 1\n", "preprocess.adapthist_kernel_px"),
    ("equalize_adapthist = 'if dark'\n", "preprocess.equalize_adapthist"),
    ("clahe = true\nequalize_adapthist = true\n", "preprocess"),
])
def test_bad_adapthist_settings_are_refused_naming_the_key(tmp_path, bad, key):
    path = write_recipe(tmp_path, bad)
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(path) in str(err.value)
    assert key in [k for k, _ in err.value.problems], err.value.problems
    if bad.startswith("clahe"):
        assert "choose one contrast equalisation" in str(err.value)
