"""Issue 19.6: `station run` / `station demo` refuse a bad start with one line and exit 2:
an unknown active_recipe (naming the station file and the key), a PLC or HMI port already in
use (naming the port and the setting or flag that changes it)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.plc.conftest import free_port


def station_file(tmp_path: Path, *, recipe="demo-part", plc_port=None, hmi_port=None) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f"""
active_recipe = "{recipe}"
recipes_dir = "{REPO_ROOT / 'recipes'}"
models_dir = "models"
[[cameras]]
type = "simulated"
[plc]
port = {plc_port or free_port()}
[database]
url = "sqlite:///var/station.db"
[archive]
dir = "var/images"
[hmi]
enabled = {'true' if hmi_port else 'false'}
port = {hmi_port or 8080}
""")
    return path


def run(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "station.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_unknown_active_recipe_names_file_and_key(tmp_path):
    path = station_file(tmp_path, recipe="no-such-part")
    proc = run("run", "--config", path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    known = ", ".join(sorted(p.stem for p in (REPO_ROOT / "recipes").glob("*.toml")))
    assert error_lines(proc) == [f"error: {path}: active_recipe: no recipe named 'no-such-part' in {REPO_ROOT / 'recipes'} "
                                 f"(known: {known})"]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_plc_port_in_use_is_one_line_naming_port_and_setting(tmp_path, taken_port):
    path = station_file(tmp_path, plc_port=taken_port)
    proc = run("run", "--config", path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc)
    assert line == (f"error: {path}: [plc] port: port {taken_port} on 127.0.0.1 for the PLC's Modbus server is already "
                    "in use (another station running?); choose a free port with [plc] port")
    assert "Traceback" not in proc.stderr


def test_hmi_port_in_use_is_one_line_naming_port_and_setting(tmp_path, taken_port):
    path = station_file(tmp_path, hmi_port=taken_port)
    proc = run("run", "--config", path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc)
    assert f"[hmi] port: port {taken_port} on 127.0.0.1 for the HMI is already in use" in line


def test_demo_port_in_use_names_the_flag(tmp_path, taken_port):
    proc = run("demo", "--plc-port", taken_port, "--hmi-port", free_port(), "--root", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc)
    assert line.startswith(f"error: station demo: --plc-port: port {taken_port} on 127.0.0.1") and line.endswith("--plc-port")
