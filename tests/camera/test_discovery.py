"""Producers and devices through harvesters with the GenTL simulator (viky.cti)."""

from __future__ import annotations

import os

import pytest

from station.camera.base import CameraError
from station.camera.discovery import GENTL_PATH_VARIABLE, ProducerSet, check_producer, producer_paths


def test_simulator_lists_three_devices_with_vendor_model_serial(viky_cti, producers):
    assert producers.ensure([viky_cti]) == []
    devices = producers.devices()
    assert [d.serial_number for d in devices] == ["0", "1", "2"]
    assert {d.model for d in devices} == {"Viky"}
    assert all(d.vendor == "Machine Vision Games Ltd." for d in devices)
    assert [d.id for d in devices] == ["VikyTL_DEV_red", "VikyTL_DEV_green", "VikyTL_DEV_blue"]
    assert all(d.producer == str(viky_cti) for d in devices)


def test_find_by_serial_device_id_and_index(viky_cti, producers):
    producers.ensure([viky_cti])
    assert producers.find("1").id == "VikyTL_DEV_green"
    assert producers.find("VikyTL_DEV_blue").serial_number == "2"
    assert producers.find(0).serial_number == "0"


def test_unknown_device_is_named_and_the_known_ones_listed(viky_cti, producers):
    producers.ensure([viky_cti])
    with pytest.raises(CameraError, match=r"no device 'cam-42'.*serial '0'.*serial '2'"):
        producers.find("cam-42")
    with pytest.raises(CameraError, match=r"no device 7"):
        producers.find(7)


def test_environment_directories_add_their_cti_files(viky_cti, tmp_path):
    env = {GENTL_PATH_VARIABLE: os.pathsep.join([str(viky_cti.parent), str(tmp_path / "absent")])}
    paths = producer_paths([], env)
    assert viky_cti in paths
    # configured first, no duplicates
    assert producer_paths([viky_cti], env).count(viky_cti) == 1
    assert producer_paths([viky_cti], env)[0] == viky_cti


def test_missing_producer_is_named(tmp_path):
    missing = tmp_path / "vendor" / "gone.cti"
    with pytest.raises(CameraError, match=rf"GenTL producer {missing} does not exist"):
        check_producer(missing)


def test_broken_producer_is_named(tmp_path):
    broken = tmp_path / "broken.cti"
    broken.write_bytes(b"this is not a shared library")
    with pytest.raises(CameraError, match=rf"GenTL producer {broken} cannot be loaded"):
        check_producer(broken)


def test_a_library_that_is_not_a_producer_is_named(tmp_path):
    import ctypes.util

    libc = ctypes.util.find_library("c")
    assert libc, "libc not found"
    import ctypes

    path = ctypes.CDLL(libc)._name
    fake = tmp_path / "libc.cti"
    fake.symlink_to(path if os.path.isabs(path) else f"/lib/x86_64-linux-gnu/{path}")
    if not fake.exists():
        pytest.skip(f"cannot resolve {path} to a file")
    with pytest.raises(CameraError, match="not a GenTL producer"):
        check_producer(fake)


def test_broken_producer_next_to_a_good_one_is_reported_and_the_good_one_used(viky_cti, producers, tmp_path):
    broken = tmp_path / "broken.cti"
    broken.write_bytes(b"\x7fELF garbage")
    problems = producers.ensure([broken, viky_cti])
    assert len(problems) == 1 and str(broken) in problems[0]
    assert producers.files == [viky_cti]
    assert len(producers.devices()) == 3
    assert str(broken) in producers.problems[broken]


def test_refresh_bumps_generation(viky_cti, producers):
    producers.ensure([viky_cti])
    g = producers.generation
    producers.refresh()
    assert producers.generation == g + 1
    assert len(producers.devices()) == 3


def test_two_producer_sets_cannot_share_a_producer(viky_cti, producers):
    # pins the measured GenTL behaviour that makes ProducerSet process-wide
    producers.ensure([viky_cti])
    other = ProducerSet()
    try:
        other.ensure([viky_cti])
        assert other.devices() == []
    finally:
        other.reset()


def test_a_user_defined_name_opens_a_device_too():
    # viky.cti has no user-defined names; the match rule is plain data
    from station.camera.discovery import DeviceFacts

    d = DeviceFacts(index=3, id="GEV-00-11", vendor="V", model="M", serial_number="22334455",
                    user_defined_name="top-cam", tl_type="GEV", producer="/x.cti")
    assert d.matches("top-cam") and d.matches("22334455") and d.matches("GEV-00-11") and d.matches(3)
    assert not d.matches("side-cam") and not d.matches(0) and not d.matches("3")
