"""Recipe rules -> verdict: areas in px and mm², confidence, counts, zones, reasons, PLC codes."""

from __future__ import annotations

import numpy as np
import pytest

from station.inspection import Defect, Outcome, RejectReason
from station.verdict import UNKNOWN_CLASS_PLC_CODE, decide, locate_all
from tests.vision.conftest import write_recipe

H, W = 100, 200


def blob(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def defect(cls, mask, confidence=0.9, view="top") -> Defect:
    ys, xs = np.nonzero(mask)
    return Defect(view, cls, confidence, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), int(mask.sum()), mask)


def located(*defects, recipe, views=("top",)) -> list[Defect]:
    """The defects as the inspector hands them to decide: located on their views."""
    return locate_all(list(defects), recipe, dict.fromkeys(views, (H, W)))


def test_no_defect_passes_with_code_zero(blob_recipe):
    v = decide(located(recipe=blob_recipe.recipe), blob_recipe.recipe)
    assert v.outcome is Outcome.PASS and v.plc_code == 0 and v.top_defect is None and v.reason == "no defect"


def test_area_over_min_px_rejects_and_names_class_and_limit(blob_recipe):
    d = defect("crack", blob(10, 10, 20, 13))  # 30 px >= 20 px
    v = decide(located(d, recipe=blob_recipe.recipe), blob_recipe.recipe)
    assert v.outcome is Outcome.REJECT and v.reject_reason is RejectReason.DEFECT
    assert v.plc_code == 2 and v.top_defect.box == d.box and v.top_defect.counted_area_px == 30
    assert v.reason == "crack 30 px > 20 px"


def test_below_min_area_or_confidence_passes(blob_recipe):
    small = defect("crack", blob(10, 10, 20, 11))  # 10 px
    unsure = defect("stain", blob(50, 50, 60, 60), confidence=0.3)  # 100 px, conf < 0.5
    v = decide(located(small, unsure, recipe=blob_recipe.recipe), blob_recipe.recipe)
    assert v.outcome is Outcome.PASS and v.plc_code == 0
    assert "below the recipe's limits" in v.reason


def test_mm2_limit_and_reason_with_zone(tmp_path):
    loaded = write_recipe(tmp_path / "r.toml", extra="mm_per_px = 0.1\n\n[[zones]]\nname = \"A\"\nrect = [0, 0, 100, 100]\n")
    text = loaded.text.replace('plc_code = 2\nmin_area_px = 20', 'plc_code = 2\nmin_area_mm2 = 0.5')
    (tmp_path / "r.toml").write_text(text)
    from station.recipe import load_recipe

    recipe = load_recipe(tmp_path / "r.toml").recipe
    big = defect("crack", blob(10, 10, 41, 20))  # 310 px = 3.1 mm²
    (placed,) = located(big, recipe=recipe)
    v = decide([placed], recipe)
    assert v.outcome is Outcome.REJECT
    assert v.reason == "crack 3.1 mm² > 0.5 mm² in zone A"
    assert placed.zone == "A" and placed.area_mm2 == pytest.approx(3.1)
    assert big.zone is None and big.area_mm2 is None  # decide and locate change nothing they are given
    tiny = defect("crack", blob(10, 10, 14, 20))  # 40 px = 0.4 mm² < 0.5
    assert decide(located(tiny, recipe=recipe), recipe).outcome is Outcome.PASS


def test_inspect_zone_counts_only_the_area_inside(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", extra="[[zones]]\nname = \"plate\"\nrect = [0, 0, 100, 100]\n").recipe
    outside = defect("stain", blob(120, 10, 160, 50))
    straddling = defect("stain", blob(95, 10, 105, 20))  # 50 of 100 px inside
    assert decide(located(outside, recipe=recipe), recipe).outcome is Outcome.PASS
    v = decide(located(straddling, recipe=recipe), recipe)
    assert v.outcome is Outcome.REJECT and v.reason == "stain 50 px > 20 px in zone plate"


def test_ignore_zone_removes_its_pixels(tmp_path):
    extra = "[[zones]]\nname = \"hole\"\nkind = \"ignore\"\nrect = [40, 40, 80, 80]\n"
    recipe = write_recipe(tmp_path / "r.toml", extra=extra).recipe
    inside_ignore = defect("stain", blob(45, 45, 75, 75))
    assert decide(located(inside_ignore, recipe=recipe), recipe).outcome is Outcome.PASS
    partly = defect("stain", blob(70, 45, 90, 75))  # 10 of 20 columns outside the ignore zone: 300 px
    v = decide(located(partly, recipe=recipe), recipe)
    assert v.outcome is Outcome.REJECT and v.reason.startswith("stain 300 px")


def test_max_count_tolerates_that_many_per_view(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml").recipe
    text = (tmp_path / "r.toml").read_text().replace('plc_code = 3\nmin_area_px = 20', 'plc_code = 3\nmin_area_px = 20\nmax_count = 2')
    (tmp_path / "r.toml").write_text(text)
    from station.recipe import load_recipe

    recipe = load_recipe(tmp_path / "r.toml").recipe
    two = [defect("stain", blob(10 * i, 10, 10 * i + 6, 16)) for i in (1, 3)]
    assert decide(located(*two, recipe=recipe), recipe).outcome is Outcome.PASS
    three = two + [defect("stain", blob(100, 10, 106, 16), confidence=0.95)]
    v = decide(located(*three, recipe=recipe), recipe)
    assert v.outcome is Outcome.REJECT and "(3 > max 2)" in v.reason and v.top_defect.box == three[-1].box


def test_top_defect_is_the_most_confident_and_sets_plc_code(blob_recipe):
    a = defect("crack", blob(10, 10, 30, 12), confidence=0.7)
    b = defect("scratch", blob(50, 50, 80, 52), confidence=0.95)
    v = decide(located(a, b, recipe=blob_recipe.recipe), blob_recipe.recipe)
    assert v.top_defect.confidence == 0.95 and v.top_defect.class_name == "scratch"
    assert v.plc_code == 1 and v.reason.endswith("(+1 more)")


def test_unknown_class_rejects_fail_safe(blob_recipe):
    v = decide(located(defect("dent", blob(10, 10, 20, 20)), recipe=blob_recipe.recipe), blob_recipe.recipe)
    assert v.outcome is Outcome.REJECT and v.plc_code == UNKNOWN_CLASS_PLC_CODE and "dent" in v.reason


def test_any_view_rejecting_rejects_the_part(blob_recipe):
    d = defect("stain", blob(10, 10, 20, 20), view="side")
    v = decide(located(d, views=("top", "side"), recipe=blob_recipe.recipe), blob_recipe.recipe)
    assert v.outcome is Outcome.REJECT


def test_defect_on_a_view_the_part_lacks_is_an_error(blob_recipe):
    with pytest.raises(ValueError, match="does not have"):
        decide(located(defect("stain", blob(10, 10, 20, 20), view="ghost"), recipe=blob_recipe.recipe), blob_recipe.recipe)


def test_defect_without_mask_uses_its_box_up_to_its_area(blob_recipe):
    d = Defect("top", "stain", 0.9, (10, 10, 30, 30), 25, None)  # box 400 px, area 25 px
    v = decide(located(d, recipe=blob_recipe.recipe), blob_recipe.recipe)
    assert v.outcome is Outcome.REJECT and v.reason == "stain 25 px > 20 px"


# ---- review band (issue 22) ------------------------------------------------------------------
def banded(tmp_path, recipe_wide: str = "review_at = 0.3", class_lines: str = ""):
    """The blob recipe with a review band [review_at, 0.5) and optional lines for class crack."""
    loaded = write_recipe(tmp_path / "r.toml", extra=recipe_wide)
    text = loaded.text.replace("plc_code = 2\nmin_area_px = 20", "plc_code = 2\nmin_area_px = 20\n" + class_lines)
    (tmp_path / "r.toml").write_text(text)
    from station.recipe import load_recipe

    return load_recipe(tmp_path / "r.toml").recipe


def test_finding_in_the_review_band_is_a_review_verdict_with_the_review_code(tmp_path):
    from station.inspection import REVIEW_PLC_CODE

    recipe = banded(tmp_path)
    d = defect("stain", blob(10, 10, 20, 20), confidence=0.4)  # 0.3 <= 0.4 < 0.5
    v = decide(located(d, recipe=recipe), recipe)
    assert v.outcome is Outcome.REVIEW and v.for_review and not v.passed
    assert v.plc_code == REVIEW_PLC_CODE and v.reject_reason is None and v.top_defect.box == d.box
    assert v.reason == "review: stain 100 px > 20 px, confidence 0.40 in the review band [0.3, 0.5)"


def test_below_the_band_passes_and_a_reject_beats_a_review(tmp_path):
    recipe = banded(tmp_path)
    low = defect("stain", blob(10, 10, 20, 20), confidence=0.29)
    assert decide(located(low, recipe=recipe), recipe).outcome is Outcome.PASS
    doubtful = defect("stain", blob(10, 10, 20, 20), confidence=0.45)
    sure = defect("crack", blob(50, 50, 80, 52), confidence=0.6)
    v = decide(located(doubtful, sure, recipe=recipe), recipe)
    assert v.outcome is Outcome.REJECT and v.plc_code == 2


def test_too_small_for_the_rules_is_never_sent_to_review(tmp_path):
    recipe = banded(tmp_path)
    small = defect("stain", blob(10, 10, 20, 11), confidence=0.45)  # 10 px < 20 px
    assert decide(located(small, recipe=recipe), recipe).outcome is Outcome.PASS


def test_without_a_band_a_doubtful_finding_passes_as_before(blob_recipe):
    d = defect("stain", blob(10, 10, 20, 20), confidence=0.4)
    assert decide(located(d, recipe=blob_recipe.recipe), blob_recipe.recipe).outcome is Outcome.PASS


def test_class_band_overrides_the_recipe_band(tmp_path):
    recipe = banded(tmp_path, recipe_wide="review_at = 0.3", class_lines="min_confidence = 0.9\nreview_at = 0.7")
    crack_mid = defect("crack", blob(10, 10, 40, 12), confidence=0.6)  # below crack's band [0.7, 0.9)
    assert decide(located(crack_mid, recipe=recipe), recipe).outcome is Outcome.PASS
    crack_band = defect("crack", blob(10, 10, 40, 12), confidence=0.8)
    v = decide(located(crack_band, recipe=recipe), recipe)
    assert v.outcome is Outcome.REVIEW and "[0.7, 0.9)" in v.reason
    stain_band = defect("stain", blob(10, 10, 20, 20), confidence=0.35)  # the recipe's band [0.3, 0.5)
    assert decide(located(stain_band, recipe=recipe), recipe).outcome is Outcome.REVIEW


def test_max_count_review_when_the_doubtful_ones_would_reach_the_limit(tmp_path):
    recipe = banded(tmp_path, class_lines="max_count = 1")
    sure = defect("crack", blob(10, 10, 40, 12), confidence=0.9)
    assert decide(located(sure, recipe=recipe), recipe).outcome is Outcome.PASS  # 1 tolerated
    doubtful = defect("crack", blob(10, 50, 40, 52), confidence=0.4)
    v = decide(located(sure, doubtful, recipe=recipe), recipe)
    assert v.outcome is Outcome.REVIEW and v.top_defect.confidence == 0.4 and "(2 > max 1 with the doubtful ones)" in v.reason


@pytest.mark.parametrize("recipe_wide, class_lines, message", [
    ("review_at = 0.5", "", "the recipe's review_at 0.5 must be below its min_confidence 0.5"),
    ("review_at = 0.3", "min_confidence = 0.2", "class 'crack': the recipe's review_at 0.3 must be below its min_confidence 0.2"),
    ("", "review_at = 0.6", "class 'crack': its review_at 0.6 must be below its min_confidence 0.5"),
])
def test_review_at_must_lie_below_min_confidence(tmp_path, recipe_wide, class_lines, message):
    from station.config_errors import ConfigError

    with pytest.raises(ConfigError) as err:
        banded(tmp_path, recipe_wide, class_lines)
    assert message in str(err.value)


def test_class_plc_codes_stop_below_the_reserved_result_codes(tmp_path):
    from station.config_errors import ConfigError

    loaded = write_recipe(tmp_path / "r.toml")
    (tmp_path / "r.toml").write_text(loaded.text.replace("plc_code = 2\n", "plc_code = 65533\n"))  # 0xFFFD: review
    from station.recipe import load_recipe

    with pytest.raises(ConfigError, match="plc_code"):
        load_recipe(tmp_path / "r.toml")
