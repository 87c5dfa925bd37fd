"""Recipe features and trigger modes on a GenApi node map with the SFNC trigger, geometry and
exposure nodes (tests/camera/register_device.py): what viky.cti cannot show."""

from __future__ import annotations

import struct

import pytest

from station.camera.features import apply_features, setup_trigger, write_feature

from .register_device import register_node_map


def reg(port, addresses, name) -> int:
    return int.from_bytes(port.memory[addresses[name]:addresses[name] + 4], "little")


def test_software_trigger_sets_frame_start_software_source_and_mode_on():
    nm, port, addr = register_node_map()
    assert setup_trigger(nm, "software", "Line0") == ("software", "")
    assert nm.TriggerSelector.value == "FrameStart"
    assert nm.TriggerSource.value == "Software" and nm.TriggerMode.value == "On"
    port.writes.clear()
    nm.TriggerSoftware.execute()  # what GenicamCamera does per part
    assert port.writes == [(addr["TriggerSoftware"], (1).to_bytes(4, "little"))]


def test_hardware_trigger_on_a_line_with_rising_edge():
    nm, port, addr = register_node_map()
    assert setup_trigger(nm, "hardware", "Line1") == ("hardware", "")
    assert nm.TriggerSource.value == "Line1"
    assert nm.TriggerActivation.value == "RisingEdge"  # the register started at FallingEdge
    assert reg(port, addr, "TriggerMode") == 1


def test_hardware_trigger_on_a_line_the_device_lacks_falls_back_naming_it():
    nm, port, addr = register_node_map()
    mode, note = setup_trigger(nm, "hardware", "Line7")
    assert mode == "freerun" and "TriggerSource=Line7" in note and "falling back to free-run" in note
    assert nm.TriggerMode.value == "Off" and nm.AcquisitionMode.value == "Continuous"


def test_software_trigger_without_the_command_falls_back_naming_it():
    nm, port, addr = register_node_map(omit=("TriggerSoftware",))
    mode, note = setup_trigger(nm, "software", "Line0")
    assert mode == "freerun" and "TriggerSoftware" in note
    assert nm.TriggerMode.value == "Off"


def test_hardware_trigger_without_activation_node_still_works():
    nm, port, addr = register_node_map(omit=("TriggerActivation", "TriggerSelector"))
    assert setup_trigger(nm, "hardware", "Line0") == ("hardware", "")
    assert nm.TriggerSource.value == "Line0" and nm.TriggerMode.value == "On"


def test_freerun_turns_trigger_mode_off():
    nm, port, addr = register_node_map()
    nm.TriggerMode.value = "On"
    assert setup_trigger(nm, "freerun", "Line0") == ("freerun", "")
    assert nm.TriggerMode.value == "Off"


def test_features_of_every_node_type_are_written():
    nm, port, addr = register_node_map()
    report = apply_features(nm, {"ExposureTime": 5000, "ReverseX": True, "PixelFormat": "Mono12", "Width": 640})
    assert report.applied == {"ExposureTime": 5000.0, "ReverseX": True, "PixelFormat": "Mono12", "Width": 640}
    assert report.missing == [] and report.refused == {}
    assert struct.unpack("<d", port.memory[addr["ExposureTime"]:addr["ExposureTime"] + 8])[0] == 5000.0
    assert reg(port, addr, "ReverseX") == 1 and reg(port, addr, "PixelFormat") == 1 and reg(port, addr, "Width") == 640


def test_geometry_is_written_in_an_order_that_fits():
    # from 1024 wide at offset 0 to a 512-wide window at offset 512: offsets go to 0, then the
    # size, then the offsets, whatever order the recipe lists them in
    nm, port, addr = register_node_map()
    report = apply_features(nm, {"OffsetX": 512, "Width": 512, "OffsetY": 100, "Height": 400})
    assert report.refused == {} and report.missing == []
    assert (nm.Width.value, nm.OffsetX.value, nm.Height.value, nm.OffsetY.value) == (512, 512, 400, 100)


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("Width", 100, "100 is not 16 + a multiple of 16"),
        ("Width", 4096, "4096 outside [16, 1024]"),
        ("Width", 64.5, "64.5 is not an integer"),
        ("ExposureTime", 1.0, "1.0 outside [10.0, 1000000.0]"),
        ("ExposureTime", "long", "'long' is not a number"),
        ("PixelFormat", "RGB8", "'RGB8' is not one of ['Mono8', 'Mono12', 'BayerRG8']"),
        ("ReverseX", 1, "1 is not true/false"),
        ("SensorWidth", 2048, "not writable now (access mode RO)"),
        ("TriggerSoftware", False, "a command takes the value true"),
    ],
)
def test_refused_values_keep_the_register_and_say_why(name, value, reason):
    nm, port, addr = register_node_map()
    before = bytes(port.memory)
    status, detail = write_feature(nm, name, value)
    assert (status, detail) == ("refused", reason)
    assert bytes(port.memory) == before


def test_missing_nodes_are_listed_and_the_rest_applied():
    nm, port, addr = register_node_map(omit=("ExposureTime",))
    report = apply_features(nm, {"ExposureTime": 800.0, "GainDb": 3.0, "Width": 256})
    assert report.missing == ["ExposureTime", "GainDb"]
    assert report.applied == {"Width": 256}
    assert report.problems() == ["feature 'ExposureTime' does not exist on the device",
                                 "feature 'GainDb' does not exist on the device"]
