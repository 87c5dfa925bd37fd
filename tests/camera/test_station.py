"""The Station composed with GenICam cameras on the simulator: it runs when at least one
configured camera opens (the others raise an alarm) and refuses to start when none can."""

from __future__ import annotations

import pytest

from station.app import Station, StartupError
from station.config import StationConfig
from station.inspection import RejectReason

RECIPE = """
name = "two-view-part"
plc_id = 3
time_budget_ms = 3000

[[cameras]]
name = "top"
trigger = "software"
features = { AcquisitionFrameRate = 200.0, PixelFormat = "Mono8", Width = 320, Height = 240 }

[[cameras]]
name = "side"
trigger = "freerun"
features = { AcquisitionFrameRate = 200.0, PixelFormat = "RGBa8", Width = 320, Height = 240, ExposureTime = 800.0 }

[vision]
analyzer = "threshold"

[[vision.blobs]]
class = "stain"
polarity = "dark"
shape = "blob"

[[classes]]
name = "stain"
plc_code = 1
min_area_px = 50
"""


class Collector:
    def __init__(self):
        self.items = []

    def publish(self, inspection):
        self.items.append(inspection)


def station_config(tmp_path, viky_cti, cameras) -> StationConfig:
    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / "two-view-part.toml").write_text(RECIPE)
    return StationConfig.model_validate({
        "recipes_dir": str(recipes), "active_recipe": "two-view-part", "models_dir": str(tmp_path / "models"),
        "cameras": [{"type": "genicam", "cti": [str(viky_cti)], "reconnect_backoff_ms": [60_000], **c} for c in cameras],
        "plc": {"enabled": False}, "hmi": {"enabled": False}, "inference": {"backend": "onnxruntime"},
    })


@pytest.fixture(autouse=True)
def fresh_shared_producers():
    # the Station's cameras use the process-wide producer set: release it after each test
    from station.camera.discovery import shared_producers

    yield
    shared_producers().reset()


def test_station_runs_two_genicam_views_and_alarms_the_camera_that_cannot_open(tmp_path, viky_cti):
    config = station_config(tmp_path, viky_cti, [{"name": "top", "device": "0"}, {"name": "side", "device": "1"},
                                                 {"name": "spare", "device": "SN-NOT-HERE"}])
    sink = Collector()
    station = Station(config, plc=False, history=False, sinks=[sink])
    with station:
        lost = {a.key: a.message for a in station.alarms.active()}
        assert "SN-NOT-HERE" in lost["camera_lost:spare"]
        # recipe features reached the devices; the one the simulator lacks is reported, not fatal
        assert "ExposureTime" in lost["camera_features:side"]
        for part in range(100, 105):  # one part at a time, as a line with one part in the cell
            assert station.pipeline.wait_published(station.pipeline.trigger(part_id=part), 10.0)
    assert [i.part_id for i in sink.items] == [100, 101, 102, 103, 104]
    for insp in sink.items:
        assert insp.verdict.reject_reason is not RejectReason.CAMERA_ERROR, insp.verdict.reason
        assert [v.camera for v in insp.views] == ["top", "side"]
        assert insp.views[0].image.shape == (240, 320) and insp.views[1].image.shape[:2] == (240, 320)


def test_station_refuses_to_start_when_no_camera_opens(tmp_path, viky_cti):
    config = station_config(tmp_path, viky_cti, [{"name": "top", "device": "SN-GONE"}])
    station = Station(config, plc=False, history=False)
    with pytest.raises(StartupError, match="SN-GONE"):
        station.start()
    station.stop()
