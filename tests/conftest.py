"""Shared test fixtures. Area-specific fixtures live in each tests/<area>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("STATION_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()
# as `make test` does: models are pulled from the shared folder's copies first (the SAM pair)
if (SHARED_DIR / "models").is_dir():
    os.environ.setdefault("STATION_MODEL_DIRS", str(SHARED_DIR / "models"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"shared material not found at {SHARED_DIR} (set STATION_SHARED_DIR)")
    return SHARED_DIR


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


def pull_demo_models(root: Path) -> Path:
    """The demo recipe's models (station.recipe_models) in ``root/var/models``, as `station demo`
    pulls them at its first start (the SAM pair copied from ../shared, its trained models from
    models/trained): for tests that build the demo station themselves."""
    from station.models_store import ensure_recipe_models

    models = root / "var" / "models"
    ensure_recipe_models(REPO_ROOT / "recipes" / "demo-part.toml", models)
    return models


@pytest.fixture
def demo_models(tmp_path, shared_dir) -> Path:
    return pull_demo_models(tmp_path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) a skipped test is a failure: the bootstrap installs everything the tests
    drive, so a skip there means a real part (PostgreSQL, Chromium, gcc, a tmpfs mount...) went
    missing and its tests would silently stop testing anything."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be skipped: {reason}"
