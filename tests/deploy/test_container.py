"""The container recipe: what the NPU runtime needs is mapped, and the Dockerfile's inputs exist.

No image is built here (no Docker daemon, no arm64 base image offline): see deploy/README.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_compose_maps_npu_device_tree_and_runtime(deploy_dir: Path):
    compose = yaml.safe_load((deploy_dir / "container/compose.yaml").read_text())
    station = compose["services"]["station"]
    assert "/dev/dri/renderD129:/dev/dri/renderD129" in station["devices"]
    volumes = station["volumes"]
    assert "/proc/device-tree/compatible:/proc/device-tree/compatible:ro" in volumes
    assert "/usr/lib/librknnrt.so:/usr/lib/librknnrt.so:ro" in volumes
    assert any(v.startswith("/var/lib/station:/var/lib/station") for v in volumes)
    assert station["network_mode"] == "host"
    assert station["cap_drop"] == ["ALL"] and station["cap_add"] == ["NET_BIND_SERVICE"]
    assert (REPO / "deploy/container" / station["build"]["context"]).resolve() == REPO
    assert (REPO / station["build"]["dockerfile"]).is_file()


def test_dockerfile_copies_existing_paths_and_pins_the_toolkit(deploy_dir: Path):
    text = (deploy_dir / "container/Dockerfile").read_text()
    copies = re.findall(r"^COPY (.+) \S+$", text, flags=re.M)
    assert copies
    for sources in copies:
        for src in sources.split():
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    install_sh = (deploy_dir / "install.sh").read_text()
    pinned = re.search(r"^RKNN_VERSION=(\S+)$", install_sh, flags=re.M).group(1)
    assert f"ARG RKNN_VERSION={pinned}" in text, "image and install.sh must pin the same rknn-toolkit-lite2"
    assert re.search(r"^FROM python:3\.1[12]-", text, flags=re.M), "rknn-toolkit-lite2 has wheels up to Python 3.12"
