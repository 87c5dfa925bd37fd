"""SAM-assisted outlining for the review page (hmi.labelling) with the real LiteMedSAM pair on a
real tile photo: a box comes back as the defect's outline, each image is encoded once."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from station.hmi.labelling import DEFAULT_SEGMENTATION, SamOutliner, normalise_box, segmentation_of, svg_path
from station.recipe import load_recipe
from tests.hmi.stand import REPO

TILE = "data/magnetic-tile-train/MT_Blowhole/Imgs/exp1_num_317483"


@pytest.fixture(scope="module")
def tile(shared_dir):
    image = cv2.imread(str(shared_dir / f"{TILE}.jpg"), cv2.IMREAD_GRAYSCALE)
    truth = cv2.imread(str(shared_dir / f"{TILE}.png"), cv2.IMREAD_GRAYSCALE) >= 128
    return image, truth


def test_a_box_becomes_the_defects_outline_and_each_image_is_encoded_once(sam_models_dir, tile):
    image, truth = tile
    ys, xs = np.nonzero(truth)
    box = (int(xs.min()) - 4, int(ys.min()) - 4, int(xs.max()) + 5, int(ys.max()) + 5)
    outliner = SamOutliner(sam_models_dir, cache_images=2)
    first = outliner.outline("litemedsam", "image-1", image, box)
    assert first.encoded_now and outliner.encoder_runs == 1
    iou = (first.mask & truth).sum() / (first.mask | truth).sum()
    assert iou > 0.5, f"outline IoU with the true blowhole {iou:.2f}"
    assert not first.mask[:, : box[0]].any() and not first.mask[: box[1]].any()  # nothing outside the drawn box
    x0, y0, x1, y1 = first.box
    assert box[0] <= x0 < x1 <= box[2] and box[1] <= y0 < y1 <= box[3]
    # a second box on the same image reuses its encoding; the cache holds two images
    again = outliner.outline("litemedsam", "image-1", image, (0, 0, 60, 60))
    assert not again.encoded_now and outliner.encoder_runs == 1
    outliner.outline("litemedsam", "image-2", image, box)
    outliner.outline("litemedsam", "image-3", image, box)
    assert outliner.encoder_runs == 3
    outliner.outline("litemedsam", "image-1", image, box)  # evicted (least recently used): encoded again
    assert outliner.encoder_runs == 4
    assert outliner.describe("litemedsam").startswith("litemedsam ") and not outliner.takes_points("litemedsam")
    path = svg_path(first.mask)
    assert path.startswith("M") and path.endswith("Z")


def test_which_pair_outlines_a_recipes_parts():
    assert segmentation_of(load_recipe(REPO / "recipes" / "magnetic-tile.toml").recipe) == "litemedsam"
    assert segmentation_of(load_recipe(REPO / "recipes" / "plate-threshold.toml").recipe) == DEFAULT_SEGMENTATION  # threshold: none of its own
    assert segmentation_of(None) == DEFAULT_SEGMENTATION


def test_dragged_boxes_are_normalised_and_clicks_refused():
    assert normalise_box(50.7, 40.2, 10.1, 5.9, (100, 80)) == (10, 5, 51, 41)  # any corner order, clipped
    assert normalise_box(-5, -5, 200, 300, (100, 80)) == (0, 0, 80, 100)
    assert normalise_box(10, 10, 11.5, 30, (100, 80)) is None  # a click, not a box
