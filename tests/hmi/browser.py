"""Helpers for tests that drive a real Chromium (Debian's chromium + chromedriver, Selenium):
starting one, waiting on the page, NiceGUI's websocket handshake. The ``browser`` fixture is in
tests/hmi/conftest.py. Screenshots go to tests/_artifacts/hmi/."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.hmi.stand import REPO

ARTIFACTS = REPO / "tests" / "_artifacts" / "hmi"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


_driver: list = []  # for a screenshot when a wait times out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict:
    # the child must not believe it runs under pytest (NiceGUI changes its behaviour then)
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")



def start_chromium(downloads: Path | None = None, window: str = "1600,1000"):
    """Headless Chromium through Selenium (Debian's chromium + chromedriver); downloads go to ``downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--window-size={window}"):
        opts.add_argument(arg)
    if downloads is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.downloads = downloads
    _driver[:] = [driver]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return driver


def wait_for(fn, timeout_s: float = 30, what: str = "condition"):
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # the page may be mid-update
            last = exc
        time.sleep(0.2)
    if _driver:
        _driver[0].save_screenshot(str(ARTIFACTS / "timeout.png"))
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}); screenshot: tests/_artifacts/hmi/timeout.png")


def open_page(driver, url: str) -> None:
    """Load a page and wait for NiceGUI's websocket handshake (events before it are lost)."""
    driver.get(url)
    wait_for(lambda: driver.execute_script("return !!(window.did_handshake && window.socket && window.socket.connected)"),
             what=f"the websocket of {url}")


def add_engineer(db_url: str, env: dict, name: str = "eve", password: str = "eve-checks-quality") -> None:
    """An engineer account in the station's database, made by `station users add`."""
    add = subprocess.run([sys.executable, "-m", "station.cli", "users", "add", "--role", "engineer", name, "--db", db_url],
                         input=password + "\n", text=True, capture_output=True, cwd=REPO, env=env, timeout=120)
    assert add.returncode == 0, add.stderr


@contextlib.contextmanager
def serving(args: list[str], url: str, log_path: Path, env: dict, module: str = "station.cli"):
    """`station ARGS` (or ``python -m MODULE ARGS``) in a subprocess until the block ends; waits
    until ``url`` answers."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_http(url, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
