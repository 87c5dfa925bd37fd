"""deploy/install.sh: shellcheck-clean, a dry run prints every action, reruns change nothing.

This machine is x86-64 without an NPU: the SoC check is overridden (--soc) or pointed at a
look-alike compatible file, and the real-install path runs with --root into a temporary
tree (system commands such as apt-get, useradd, systemctl are printed and skipped there).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import write_compatible, write_librknnrt

INSTALL = Path(__file__).resolve().parents[2] / "deploy" / "install.sh"


def run_install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.system
@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="apt package shellcheck not installed")
def test_every_shell_script_passes_shellcheck(deploy_dir: Path):
    scripts = sorted(p for p in deploy_dir.rglob("*") if p.is_file() and (p.suffix == ".sh" or p.read_bytes()[:2] == b"#!"))
    assert INSTALL in scripts
    result = subprocess.run(["shellcheck", "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_prints_every_action_and_changes_nothing(tmp_path: Path):
    lib = write_librknnrt(tmp_path / "librknnrt.so", "2.5.0")
    before = sorted(Path("/etc").glob("station*")) + sorted(Path("/etc/systemd/system").glob("station*"))
    result = run_install("--dry-run", "--soc", "rk3588", "--librknnrt", str(lib))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    planned = [line.removeprefix("[dry-run] ") for line in out.splitlines() if line.startswith("[dry-run] ")]
    expected = [
        "useradd --system",  # service user
        "install -d -o station -g station -m 0750 /var/lib/station",
        "install -d -o root -g station -m 0750 /etc/station",
        "/opt/station/venv/bin/pip install --disable-pip-version-check rknn-toolkit-lite2==2.5.0",
        f"install -D -m 0644 {lib} /usr/lib/librknnrt.so",
        "/etc/udev/rules.d/60-station-usb3vision.rules",
        "udevadm control --reload-rules",
        "/etc/sysctl.d/60-station-gige.conf",
        "sysctl --quiet --load /etc/sysctl.d/60-station-gige.conf",
        "/etc/systemd/system/station.service",
        "systemctl daemon-reload",
        "systemctl enable station.service",
        "systemctl enable station-backup.timer",
        "/etc/tmpfiles.d/station-performance.conf",
    ]
    for fragment in expected:
        assert any(fragment in line for line in planned), f"dry run does not mention {fragment!r}:\n{out}"
    assert "SoC check overridden" in out
    assert f"{len(planned) - out.count('[dry-run] record ')} action(s) would run" in out
    after = sorted(Path("/etc").glob("station*")) + sorted(Path("/etc/systemd/system").glob("station*"))
    assert before == after
    assert not Path("/etc/systemd/system/station.service").exists() or Path("/etc/systemd/system/station.service") in before


def test_soc_check_reads_device_tree_and_refuses_other_boards(tmp_path: Path):
    lib = write_librknnrt(tmp_path / "librknnrt.so", "2.5.0")
    for soc in ("rk3588", "rk3588s"):
        compat = write_compatible(tmp_path / f"compat-{soc}", "xunlong,orangepi-5", f"rockchip,{soc}")
        result = run_install("--dry-run", "--compatible-file", str(compat), "--librknnrt", str(lib))
        assert result.returncode == 0, result.stdout
        assert f"ok    SoC {soc} (board: xunlong,orangepi-5)" in result.stdout

    pi = write_compatible(tmp_path / "compat-pi", "raspberrypi,5-model-b", "brcm,bcm2712")
    result = run_install("--dry-run", "--compatible-file", str(pi), "--librknnrt", str(lib))
    assert result.returncode == 1
    assert "SoC is not an RK3588" in result.stdout and "--soc rk3588" in result.stdout
    # the plan is still printed in full after the problem
    assert "systemctl enable station.service" in result.stdout

    result = run_install("--dry-run", "--compatible-file", str(tmp_path / "absent"), "--librknnrt", str(lib))
    assert result.returncode == 1 and "not a device-tree (ARM) system" in result.stdout


def test_librknnrt_version_must_match_the_toolkit(tmp_path: Path):
    old = write_librknnrt(tmp_path / "librknnrt.so", "2.3.0")
    result = run_install("--dry-run", "--soc", "rk3588", "--librknnrt", str(old))
    assert result.returncode == 1
    assert "is version 2.3.0, rknn-toolkit-lite2 is 2.5.0: they must match" in result.stdout
    result = run_install("--dry-run", "--soc", "rk3588", "--librknnrt", str(old), "--rknn-version", "2.3.0")
    assert result.returncode == 0, result.stdout
    assert "rknn-toolkit-lite2==2.3.0" in result.stdout


def test_cpu_only_needs_no_npu_runtime():
    result = run_install("--dry-run", "--soc", "rk3588", "--cpu-only")
    assert result.returncode == 0, result.stdout
    assert "rknn-toolkit-lite2==" not in result.stdout and "librknnrt" not in result.stdout.split("== NPU")[1]


def test_real_install_into_a_root_is_idempotent(tmp_path: Path, deploy_dir: Path):
    root = tmp_path / "root"
    lib = write_librknnrt(tmp_path / "librknnrt.so", "2.5.0")
    args = ("--root", str(root), "--soc", "rk3588", "--librknnrt", str(lib))

    first = run_install(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    installed = {
        "etc/systemd/system/station.service": deploy_dir / "station.service",
        "etc/systemd/system/station-backup.service": deploy_dir / "station-backup.service",
        "etc/systemd/system/station-backup.timer": deploy_dir / "station-backup.timer",
        "etc/udev/rules.d/60-station-usb3vision.rules": deploy_dir / "udev/60-station-usb3vision.rules",
        "etc/sysctl.d/60-station-gige.conf": deploy_dir / "sysctl/60-station-gige.conf",
        "etc/tmpfiles.d/station.conf": deploy_dir / "tmpfiles/station.conf",
        "etc/tmpfiles.d/station-performance.conf": deploy_dir / "tmpfiles/station-performance.conf",
        "etc/station/station.toml": deploy_dir / "station.example.toml",
        "usr/lib/librknnrt.so": lib,
    }
    for rel, src in installed.items():
        assert (root / rel).read_bytes() == src.read_bytes(), rel
    for d in ("var/lib/station/images", "var/lib/station/models", "var/lib/station/backups", "var/lib/station/recipes"):
        assert (root / d).is_dir(), d
    assert oct((root / "etc/station").stat().st_mode & 0o777) == "0o750"
    snapshot = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    # an operator's edit of the station file survives a rerun
    station_toml = root / "etc/station/station.toml"
    station_toml.write_text(station_toml.read_text() + "\n# edited on site\n")
    snapshot[station_toml] = station_toml.read_bytes()

    second = run_install(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to change" in second.stdout, second.stdout
    assert not [line for line in second.stdout.splitlines() if line.startswith("+ ")]
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == snapshot

    # a changed unit in the checkout is installed again, followed by daemon-reload
    (root / "etc/systemd/system/station.service").write_text("stale\n")
    third = run_install(*args)
    assert "+ install -D -m 0644" in third.stdout and "station.service" in third.stdout
    assert "[skipped: --root] systemctl daemon-reload" in third.stdout
    assert (root / "etc/systemd/system/station.service").read_bytes() == (deploy_dir / "station.service").read_bytes()


def test_unknown_option_is_a_usage_error():
    result = run_install("--frobnicate")
    assert result.returncode == 2 and "unknown option --frobnicate" in result.stderr


def test_refuses_a_real_install_without_root(tmp_path: Path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not available")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(INSTALL), "--soc", "rk3588"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and "run as root" in result.stderr
