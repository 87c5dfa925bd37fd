"""Fixtures for the vision tests: recipes written to a temp dir, LiteMedSAM pulled once."""

from __future__ import annotations

import os
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

[[classes]]
name = "stain"
colour = "#bf5af2"
plc_code = 3
min_area_px = 20
polarity = "dark"
shape = "blob"

[[classes]]
name = "crack"
colour = "#ff9500"
plc_code = 2
min_area_px = 20
polarity = "dark"
shape = "line"

[[classes]]
name = "scratch"
colour = "#ff3b30"
plc_code = 1
min_area_px = 20
polarity = "bright"
shape = "line"
"""


def write_recipe(path: Path, extra: str = "", body: str = BLOB_RECIPE):
    path.write_text(body.format(extra=extra), encoding="utf-8")
    return load_recipe(path)


@pytest.fixture
def blob_recipe(tmp_path):
    return write_recipe(tmp_path / "blobs.toml")


@pytest.fixture(scope="session")
def sam_models_dir(tmp_path_factory, shared_dir) -> Path:
    """LiteMedSAM fetched by `station models pull` from ../shared/models into a fresh models dir."""
    import subprocess
    import sys

    models = tmp_path_factory.mktemp("models")
    env = {**os.environ, "STATION_MODEL_DIRS": str(shared_dir / "models")}
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "models", "pull", "litemedsam", "--models-dir", str(models), "--no-export"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (models / "litemedsam.json").is_file() and (models / "litemedsam_decoder.json").is_file()
    return models
