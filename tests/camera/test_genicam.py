"""GenicamCamera on the GenTL simulator: acquisition, features, trigger fallback, fresh frames,
two cameras at once, and the errors an integrator meets (bad producer, unknown device)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from station.camera import make_camera
from station.camera.base import CameraError
from station.camera.genicam import GenicamCamera
from station.config import GenicamCameraConfig
from station.recipe import RecipeCamera

from .conftest import FAST


def test_make_camera_builds_the_genicam_adapter(viky_cti, alarms):
    cam = make_camera(GenicamCameraConfig(name="top", cti=[viky_cti]), alarms)
    assert isinstance(cam, GenicamCamera) and cam.name == "top" and not cam.connected


def test_200_mono_frames_with_shape_dtype_and_rising_frame_ids(open_camera):
    cam = open_camera("0")
    ids = []
    for part in range(200):
        view = cam.grab(part, timeout_s=1.0)
        assert view.image.shape == (120, 160) and view.image.dtype == np.uint8
        assert view.camera == "top" and view.source == "genicam:0"
        ids.append(view.frame_id)
    assert all(b > a for a, b in zip(ids, ids[1:]))
    assert cam.counters.frames == 200 and cam.counters.incomplete == 0
    assert cam.describe()["counters"]["frames"] == 200


def test_rgba_device_frames_are_rgb(open_camera):
    cam = open_camera("2", features={**FAST, "PixelFormat": "RGBa8", "Width": 200, "Height": 100})
    view = cam.grab(1, timeout_s=1.0)
    assert view.image.shape == (100, 200, 3) and view.image.dtype == np.uint8
    assert view.image.flags.owndata or view.image.base is not None  # a real array, not a buffer view
    assert view.image.std() > 0  # the simulator draws a scene, not a flat frame


def test_open_by_index_and_by_device_id(open_camera):
    assert open_camera(1, name="a").describe()["serial"] == "1"
    assert open_camera("VikyTL_DEV_blue", name="b").describe()["serial"] == "2"


def test_never_a_stale_frame_after_an_idle_line(open_camera):
    # 20 fps: while the line idles 0.6 s the producer fills every buffer with old frames
    cam = open_camera("0", features={**FAST, "AcquisitionFrameRate": 20.0})
    first = cam.grab(1, timeout_s=1.0)
    t0 = time.monotonic()
    time.sleep(0.6)
    second = cam.grab(2, timeout_s=1.0)
    elapsed = time.monotonic() - t0
    # a stale frame would be first+1..first+num_buffers; a fresh one was exposed after the grab began
    assert second.frame_id >= first.frame_id + int(elapsed * 20) - 1, (first.frame_id, second.frame_id, elapsed)
    assert cam.counters.stale_discarded >= 1


def test_unknown_feature_is_named_and_the_camera_keeps_running(open_camera, alarms):
    cam = open_camera("0", features={**FAST, "ExposureTimeAbs": 5000.0})
    assert cam.report.missing == ["ExposureTimeAbs"]
    assert cam.report.applied["Width"] == 160
    alarm = [a for a in alarms.active() if a.key == "camera_features:top"]
    assert alarm and "ExposureTimeAbs" in alarm[0].message and alarm[0].severity.value == "warning"
    assert cam.grab(1, timeout_s=1.0).image.shape == (120, 160)


def test_refused_values_say_why(open_camera):
    cam = open_camera("0", features={**FAST, "Width": 5000, "PixelFormat": "Mono12", "AcquisitionFrameRate": "fast"})
    refused = cam.report.refused
    assert "outside [100, 800]" in refused["Width"]
    assert refused["PixelFormat"] == "'Mono12' is not one of ['RGBa8', 'Mono8']"
    assert "not a number" in refused["AcquisitionFrameRate"]
    assert cam.connected


def test_reconfigure_for_another_recipe_changes_geometry(open_camera, alarms):
    cam = open_camera("0", features={**FAST, "Foo": 1})
    assert alarms.is_active("camera_features:top")
    cam.configure(RecipeCamera(name="top", trigger="freerun", features={**FAST, "Width": 240, "Height": 200}))
    assert cam.grab(1, timeout_s=1.0).image.shape == (200, 240)
    assert not alarms.is_active("camera_features:top")  # the new recipe's features all applied


@pytest.mark.parametrize("mode, lacking", [("software", "TriggerSoftware"), ("hardware", "TriggerSource")])
def test_trigger_mode_falls_back_to_freerun_with_the_reason(open_camera, mode, lacking):
    cam = open_camera("0", trigger=mode)
    assert cam.report.trigger_requested == mode
    assert cam.report.trigger_effective == "freerun"
    assert lacking in cam.report.trigger_note and "falling back to free-run" in cam.report.trigger_note
    assert cam.describe()["trigger"] == "freerun"
    assert cam.grab(1, timeout_s=1.0).image.ndim == 2


def test_two_devices_open_at_once(open_camera):
    top = open_camera("0", name="top")
    side = open_camera("1", name="side", features={**FAST, "PixelFormat": "RGBa8"})
    for part in range(20):
        a, b = top.grab(part, 1.0), side.grab(part, 1.0)
        assert a.camera == "top" and a.image.shape == (120, 160)
        assert b.camera == "side" and b.image.shape == (120, 160, 3)
    assert top.describe()["serial"] == "0" and side.describe()["serial"] == "1"


def test_the_same_device_twice_is_refused_with_its_serial(open_camera):
    open_camera("0", name="top")
    with pytest.raises(CameraError, match=r"camera again: cannot open device '0'.*(in use|InUse)"):
        open_camera("0", name="again")


def test_unknown_device_id_is_named_and_alarmed(viky_cti, producers, alarms):
    cam = GenicamCamera(GenicamCameraConfig(name="top", cti=[viky_cti], device="SN-404",
                                            reconnect_backoff_ms=[60_000]), alarms, producers)
    with pytest.raises(CameraError, match=r"camera top: no device 'SN-404'"):
        cam.open()
    assert not cam.connected
    assert "SN-404" in next(a.message for a in alarms.active() if a.key == "camera_lost:top")
    with pytest.raises(CameraError, match="camera top is down"):
        cam.grab(1, 0.5)
    cam.close()
    assert not alarms.is_active("camera_lost:top")


def test_missing_producer_is_named(tmp_path, producers, alarms, monkeypatch):
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    missing = tmp_path / "nowhere" / "vendor.cti"
    cam = GenicamCamera(GenicamCameraConfig(name="top", cti=[missing], reconnect_backoff_ms=[60_000]), alarms, producers)
    with pytest.raises(CameraError, match=rf"no usable GenTL producer: GenTL producer {missing} does not exist"):
        cam.open()
    cam.close()


def test_broken_producer_beside_a_good_one_runs_with_a_warning(viky_cti, tmp_path, producers, alarms):
    broken = tmp_path / "broken.cti"
    broken.write_bytes(b"not a library")
    cam = GenicamCamera(GenicamCameraConfig(name="top", cti=[broken, viky_cti]), alarms, producers)
    cam.open()
    try:
        alarm = next(a for a in alarms.active() if a.key == "camera_producer:top")
        assert str(broken) in alarm.message and alarm.severity.value == "warning"
        cam.configure(RecipeCamera(name="top", trigger="freerun", features=FAST))
        assert cam.grab(1, 1.0).image.shape == (120, 160)
    finally:
        cam.close()


def test_no_producer_at_all_says_where_to_configure_one(producers, alarms, monkeypatch):
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    cam = GenicamCamera(GenicamCameraConfig(name="top", reconnect_backoff_ms=[60_000]), alarms, producers)
    with pytest.raises(CameraError, match="no GenTL producer: set cti in the camera config or GENICAM_GENTL64_PATH"):
        cam.open()
    cam.close()


def test_producer_from_environment_variable(viky_cti, producers, alarms, monkeypatch):
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(viky_cti.parent))
    cam = GenicamCamera(GenicamCameraConfig(name="top", device="2"), alarms, producers)
    cam.open()
    try:
        assert cam.describe()["serial"] == "2"
    finally:
        cam.close()


def test_close_twice_is_safe(open_camera):
    cam = open_camera("0")
    cam.close()
    cam.close()
    assert not cam.connected
    with pytest.raises(CameraError, match="camera top is not open"):
        cam.grab(1, 0.5)


def test_recipe_cannot_drive_the_nodes_the_adapter_owns(open_camera):
    cam = open_camera("0", features={**FAST, "AcquisitionStop": True, "TriggerMode": "On"})
    assert "driven by the camera adapter" in cam.report.refused["AcquisitionStop"]
    assert "driven by the camera adapter" in cam.report.refused["TriggerMode"]
    assert cam.grab(1, 1.0).image.shape == (120, 160)


def test_a_pixel_format_the_station_cannot_convert_is_refused_at_recipe_load(open_camera):
    cam = open_camera("0", features={**FAST, "PixelFormat": "YUV422_8"})
    assert cam.report.refused["PixelFormat"].startswith("the station cannot convert 'YUV422_8'")
    assert cam.grab(1, 1.0).image.dtype == np.uint8


def test_frames_in_an_unconvertible_format_reject_with_an_alarm_but_keep_the_device(open_camera, alarms, monkeypatch):
    # viky.cti only sends Mono8/RGBa8: the converter is made to refuse two frames the way it
    # refuses a format it does not know (a device switched to Mono12p behind the station's back)
    import station.camera.genicam as genicam_module
    from station.camera.pixels import PixelFormatError

    real = genicam_module.to_station_image
    refusals = iter([True, True])

    def converter(*args, **kwargs):
        if next(refusals, False):
            raise PixelFormatError("pixel format 'Mono12p' is not supported")
        return real(*args, **kwargs)

    monkeypatch.setattr(genicam_module, "to_station_image", converter)
    cam = open_camera("0")
    for part in (1, 2):
        with pytest.raises(CameraError, match="camera top: pixel format 'Mono12p' is not supported"):
            cam.grab(part, 1.0)
    assert alarms.is_active("camera_format:top") and cam.connected and cam.counters.losses == 0
    assert cam.grab(3, 1.0).image.shape == (120, 160)
    assert not alarms.is_active("camera_format:top")
