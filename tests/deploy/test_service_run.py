"""`station run` as systemd runs it: READY=1, WATCHDOG=1 pings, STOPPING=1 on SIGTERM.

systemd's side is a real unix datagram socket passed as NOTIFY_SOCKET to a real `station run`
process (simulated camera, no PLC, no HMI). No systemd is PID 1 here, so the restart that
follows missing pings is systemd's part and is not exercised (see deploy/README.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


def station_file(tmp_path: Path, hmi: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(
        f"""
station_id = "service-test"
recipes_dir = "{REPO / 'recipes'}"
active_recipe = "plate-threshold"
models_dir = "models"
[[cameras]]
type = "simulated"
name = "top"
[plc]
enabled = false
[database]
url = "sqlite:///var/station.db"
[archive]
dir = "var/images"
[hmi]
{hmi}
"""
    )
    return path


def messages_until(sock: socket.socket, proc: subprocess.Popen, want, timeout_s: float) -> list[str]:
    got, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end and not want(got):
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            if proc.poll() is not None:
                break
    return got


def run_under_notify_socket(tmp_path: Path, hmi: str, wait_s: float = 60) -> tuple[list[str], list[str], int, str]:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.1)
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1500000")  # ping every 0.5 s
    env.pop("WATCHDOG_PID", None)
    env.pop("PYTEST_CURRENT_TEST", None)  # NiceGUI would take the child for one of its own screen tests
    proc = subprocess.Popen(
        [sys.executable, "-m", "station.cli", "run", "--config", str(station_file(tmp_path, hmi))],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        running = messages_until(sock, proc, lambda got: sum(m == "WATCHDOG=1" for m in got) >= 3, wait_s)
        proc.send_signal(signal.SIGTERM)
        stopping = messages_until(sock, proc, lambda got: any(m.startswith("STOPPING=1") for m in got), 30)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    return running, stopping, rc, proc.stdout.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_without_hmi_notifies_ready_pings_and_stops(tmp_path: Path):
    running, stopping, rc, output = run_under_notify_socket(tmp_path, "enabled = false")
    assert running and running[0].startswith("READY=1"), output
    assert sum(m == "WATCHDOG=1" for m in running) >= 3, (running, output)
    assert any(m.startswith("STOPPING=1") for m in stopping), (stopping, output)
    assert rc == 0, output



def test_run_with_hmi_notifies_ready_and_pings(tmp_path: Path):
    running, _, _, output = run_under_notify_socket(tmp_path, f'host = "127.0.0.1"\nport = {free_port()}', wait_s=15)
    assert running and running[0].startswith("READY=1"), output
    assert sum(m == "WATCHDOG=1" for m in running) >= 3, (running, output)
