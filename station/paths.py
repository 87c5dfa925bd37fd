"""Where the station finds the files it ships with.

``models/`` is installed as the package ``station.models`` (manifest, trained recipe models,
conversion requirements); ``recipes/`` is read from the checkout (an installed station names its
own recipes directory in its station file).
"""

from __future__ import annotations

from pathlib import Path

import station.models

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_RECIPES = REPO_ROOT / "recipes"
MODELS_PACKAGE = Path(station.models.__file__).resolve().parent
TRAINED_DIR = MODELS_PACKAGE / "trained"
MANIFEST = MODELS_PACKAGE / "manifest.toml"
