"""Camera fixtures: the GenTL simulator producer (viky.cti from the genicam wheel) through harvesters.

viky.cti exposes three devices (serials "0", "1", "2"; Mono8 and RGBa8; 1-200 fps; no
trigger, exposure or gain nodes). A producer can be open only once per process, so every
test gets a fresh ProducerSet and releases it afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from station.alarms import AlarmBoard
from station.camera.discovery import ProducerSet, simulator_cti
from station.config import GenicamCameraConfig
from station.recipe import RecipeCamera

# Fast, small frames: the simulator's top rate and a small ROI keep the tests cheap.
FAST = {"AcquisitionFrameRate": 200.0, "PixelFormat": "Mono8", "Width": 160, "Height": 120}


@pytest.fixture(scope="session")
def viky_cti() -> Path:
    path = simulator_cti()
    if path is None:
        pytest.fail("viky.cti not found in the installed genicam package (pip install genicam)")
    return path


@pytest.fixture
def producers():
    ps = ProducerSet()
    yield ps
    ps.reset()


@pytest.fixture
def alarms() -> AlarmBoard:
    return AlarmBoard()


@pytest.fixture
def open_camera(viky_cti, producers, alarms):
    """open_camera(device="0", name="top", features=FAST, trigger="freerun", **config) -> opened GenicamCamera."""
    from station.camera.genicam import GenicamCamera

    opened = []

    def make(device="0", name="top", features=None, trigger="freerun", **config):
        cfg = GenicamCameraConfig(name=name, cti=[viky_cti], device=device, **config)
        cam = GenicamCamera(cfg, alarms, producers)
        opened.append(cam)  # closed even when open() fails: a failed camera keeps retrying until closed
        cam.open()
        cam.configure(RecipeCamera(name=name, trigger=trigger, features=FAST if features is None else features))
        return cam

    yield make
    for cam in opened:
        cam.close()
