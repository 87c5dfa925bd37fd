"""The files install.sh places: systemd unit, tmpfiles, sysctl, udev rules, example station file.

Each is checked by the tool that reads it where this machine has one (systemd-analyze,
systemd-tmpfiles, the kernel's /proc/sys), and against the station's own config loader.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from station.config import load_station_config

def needs_systemd(test):
    """A test that runs systemd-analyze (a Debian package the bootstrap installs: not in make test-fast)."""
    skip = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="apt package systemd not installed")
    return pytest.mark.system(skip(test))


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (systemd allows repeated keys)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


@needs_systemd
def test_systemd_analyze_verify_accepts_the_unit(deploy_dir: Path, tmp_path: Path):
    # verify insists the ExecStart binary exists. On this machine /opt/station is not
    # installed, so a copy of the unit names an existing executable instead; nothing else
    # changes. verify exits 0 even for unknown keys, so any output at all is a failure.
    unit = (deploy_dir / "station.service").read_text()
    assert "ExecStart=/opt/station/venv/bin/station run" in unit
    copy = tmp_path / "station.service"
    copy.write_text(unit.replace("/opt/station/venv/bin/station", shutil.which("true")))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


@needs_systemd
def test_backup_units_verify(deploy_dir: Path, tmp_path: Path):
    for name in ("station-backup.service", "station-backup.timer"):
        shutil.copy(deploy_dir / name, tmp_path / name)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "station-backup.service"), str(tmp_path / "station-backup.timer")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    exec_start = unit_settings((deploy_dir / "station-backup.service").read_text())["Service.ExecStart"][0]
    assert "station db backup" in exec_start and "$$(date +%%F)" in exec_start  # systemd escapes for $ and %


@needs_systemd
def test_verify_would_catch_a_broken_unit(deploy_dir: Path, tmp_path: Path):
    """The check above can fail: a typo in a key is reported."""
    unit = (deploy_dir / "station.service").read_text().replace("WatchdogSec=", "WatchdogSecs=")
    copy = tmp_path / "station.service"
    copy.write_text(unit.replace("/opt/station/venv/bin/station", shutil.which("true")))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'WatchdogSecs'" in result.stderr


def test_unit_supervises_and_confines_the_station(deploy_dir: Path):
    s = unit_settings((deploy_dir / "station.service").read_text())
    assert s["Service.Type"] == ["notify"]
    assert int(s["Service.WatchdogSec"][0]) >= 5
    assert s["Service.Restart"] == ["on-failure"]
    assert s["Service.AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["Service.CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["Service.User"] == ["station"]
    assert s["Service.ProtectSystem"] == ["strict"]
    assert s["Service.ReadWritePaths"] == ["/var/lib/station"]
    assert s["Service.StandardOutput"] == ["journal"]
    assert "render" in s["Service.SupplementaryGroups"][0].split()  # /dev/dri/renderD129
    assert s["Install.WantedBy"] == ["multi-user.target"]


@needs_systemd
def test_tmpfiles_parse(deploy_dir: Path, tmp_path: Path):
    # --root keeps every write inside tmp_path; a syntax error makes systemd-tmpfiles exit 65.
    files = sorted((deploy_dir / "tmpfiles").glob("*.conf"))
    assert len(files) == 2
    result = subprocess.run(
        ["systemd-tmpfiles", f"--root={tmp_path}", "--create", *map(str, files)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    text = "".join(f.read_text() for f in files)
    assert "/sys/module/usbcore/parameters/usbfs_memory_mb" in text
    assert "/sys/class/devfreq/fdab0000.npu/governor" in text


def test_sysctl_keys_exist_in_the_kernel(deploy_dir: Path):
    keys = []
    for line in (deploy_dir / "sysctl/60-station-gige.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and value.strip(), line
            keys.append(key.strip())
    assert "net.core.rmem_max" in keys
    for key in keys:
        assert Path("/proc/sys", *key.split(".")).exists(), f"{key} is not a kernel setting"


def test_udev_rules_are_well_formed(deploy_dir: Path):
    rules = (deploy_dir / "udev/60-station-usb3vision.rules").read_text()
    labels = re.findall(r'GOTO="([^"]+)"', rules)
    assert labels and all(f'LABEL="{label}"' in rules for label in labels)
    vendor_lines = [line for line in rules.splitlines() if line.startswith("ATTR{idVendor}")]
    assert len(vendor_lines) >= 5
    for line in vendor_lines:
        assert re.fullmatch(r'ATTR\{idVendor\}=="[0-9a-f]{4}", MODE="0660", GROUP="plugdev", TAG\+="uaccess"', line), line


def test_example_station_file_loads(deploy_dir: Path, tmp_path: Path):
    copy = tmp_path / "station.toml"
    shutil.copy(deploy_dir / "station.example.toml", copy)
    config = load_station_config(copy)
    assert config.plc.port == 502
    assert config.inference.backend == "auto"
    assert config.database.url == "sqlite:////var/lib/station/station.db"
    assert config.recipes_dir == Path("/var/lib/station/recipes")  # writable under ProtectSystem=strict
