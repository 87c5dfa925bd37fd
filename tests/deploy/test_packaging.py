"""The distribution installs db/, hmi/ and models/ inside the station package, never as
top-level packages named db, hmi or models (they collide with other projects)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FOLDERS = {"station": "station", "db": "station.db", "hmi": "station.hmi", "models": "station.models"}


def _packages_on_disk() -> set[str]:
    found = set()
    for folder, package in FOLDERS.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO_ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    return found


def test_every_package_folder_is_listed_under_the_station_namespace():
    setup = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setup["packages"]) == _packages_on_disk()
    assert setup["package-dir"] == {"station.db": "db", "station.hmi": "hmi", "station.models": "models"}


@pytest.mark.slow
def test_the_wheel_has_no_top_level_db_hmi_or_models(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO_ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("inspection_station-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"station"}
    # what the runtime reads from the models package ships with it
    assert "station/models/manifest.toml" in names
    assert "station/db/migrations/versions/0001_initial_schema.py" in names
    assert any(n.startswith("station/models/trained/") and n.endswith(".onnx") for n in names)
