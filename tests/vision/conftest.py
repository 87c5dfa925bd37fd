"""Fixtures for the vision tests: recipes written to a temp dir, LiteMedSAM pulled once."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.recipe import load_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]

BLOB_RECIPE = """
name = "blobs"
plc_id = 7
time_budget_ms = 1000
good_class = "good"
{extra}

[[cameras]]
name = "top"

[vision]
analyzer = "threshold"
dark_threshold = 80
bright_threshold = 200

[[vision.blobs]]
class = "stain"
polarity = "dark"
shape = "blob"

[[vision.blobs]]
class = "crack"
polarity = "dark"
shape = "line"

[[vision.blobs]]
class = "scratch"
polarity = "bright"
shape = "line"

[[classes]]
name = "stain"
colour = "#bf5af2"
plc_code = 3
min_area_px = 20

[[classes]]
name = "crack"
colour = "#ff9500"
plc_code = 2
min_area_px = 20

[[classes]]
name = "scratch"
colour = "#ff3b30"
plc_code = 1
min_area_px = 20
"""


def write_recipe(path: Path, extra: str = "", body: str = BLOB_RECIPE):
    path.write_text(body.format(extra=extra), encoding="utf-8")
    return load_recipe(path)


@pytest.fixture
def blob_recipe(tmp_path):
    return write_recipe(tmp_path / "blobs.toml")
