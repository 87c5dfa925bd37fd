"""End to end in a real browser (Debian's chromium + chromedriver through Selenium) against
`station demo` in a subprocess: live view changes as parts are inspected, login, history
filter, detail page, CSV export, charts. Screenshots go to tests/_artifacts/hmi/."""

from __future__ import annotations

import csv
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

pytestmark = pytest.mark.browser

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


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`station demo` (simulated camera, real vision, SQLite, HMI) on a free port; an engineer account."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    root = tmp_path_factory.mktemp("demo")
    (root / "var").mkdir()
    db_url = f"sqlite:///{root / 'var' / 'station.db'}"
    add = subprocess.run([sys.executable, "-m", "station.cli", "users", "add", "--role", "engineer", "eve",
                          "--db", db_url], input="eve-checks-quality\n", text=True, capture_output=True, cwd=REPO,
                         env=child_env(), timeout=120)
    assert add.returncode == 0, add.stderr
    port = free_port()
    log = open(root / "demo.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "demo", "--no-plc", "--root", str(root),
                             "--hmi-port", str(port), "--interval-ms", "400"],
                            cwd=REPO, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/login", proc)
        yield f"http://127.0.0.1:{port}", root
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1600,1000"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.downloads = downloads
    _driver[:] = [driver]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


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


def test_live_view_changes_as_parts_are_inspected(demo, browser):
    from selenium.webdriver.common.by import By

    url, _ = demo
    open_page(browser, url + "/")
    banner = wait_for(lambda: browser.find_element(By.XPATH, "//*[contains(text(),'PASS') or contains(text(),'REJECT')]"),
                      what="a verdict banner")
    part = wait_for(lambda: browser.find_element(By.XPATH, "//*[starts-with(normalize-space(text()),'part ')]"),
                    what="the part line")
    first = part.text
    wait_for(lambda: part.text != first, 20, "the live view to show the next part")
    img = browser.find_element(By.XPATH, "//img[starts-with(@src,'data:image/jpeg')]")
    wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0,
             what="the live image to load")
    assert banner.text in ("PASS", "REJECT")
    browser.save_screenshot(str(ARTIFACTS / "operator.png"))
    # a reject shows its reason next to the overlay (about a third of the demo's parts)
    wait_for(lambda: banner.text == "REJECT", 60, "a rejected part")
    reason = browser.find_element(By.XPATH, "//*[contains(text(),'zone') or contains(text(),'mm²')]")
    assert reason.text
    browser.save_screenshot(str(ARTIFACTS / "operator-reject.png"))


def test_login_history_filter_detail_csv_and_charts(demo, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, root = demo
    open_page(browser, url + "/login?next=/history")
    inputs = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "input"), what="login inputs")
    inputs[0].send_keys("eve")
    inputs[1].send_keys("eve-checks-quality", Keys.ENTER)
    wait_for(lambda: "inspections match" in browser.page_source, what="the history table")
    wait_for(lambda: browser.execute_script("return !!(window.did_handshake && window.socket && window.socket.connected)"),
             what="the history page's websocket")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "tbody tr"), what="history rows")
    browser.save_screenshot(str(ARTIFACTS / "history.png"))

    part_input = browser.find_element(By.XPATH, "//label[.//*[text()='Part ID']]//input")
    part_input.send_keys("2")
    browser.find_element(By.XPATH, "//button[.//*[text()='Apply']]").click()
    wait_for(lambda: "1 inspections match" in browser.page_source, what="the part filter")
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 1
    browser.save_screenshot(str(ARTIFACTS / "history-filtered.png"))

    browser.find_element(By.XPATH, "//button[.//*[text()='Export CSV']]").click()
    # Chrome writes to a .crdownload and renames it when the download is complete
    csv_file = wait_for(lambda: next((p for p in browser.downloads.glob("history-*.csv")), None), what="the CSV download")
    exported = wait_for(lambda: list(csv.DictReader(csv_file.open())), what="the CSV rows")
    assert [r["part_id"] for r in exported] == ["2"]

    rows[0].click()
    wait_for(lambda: "Reason:" in browser.page_source, what="the detail page")
    assert "/inspection/" in browser.current_url
    assert "Defects (" in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "detail.png"))

    open_page(browser, url + "/charts")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "canvas")) >= 4, what="four charts")
    time.sleep(1.0)  # ECharts animates in: only for the screenshot people look at, nothing waits on it
    browser.save_screenshot(str(ARTIFACTS / "charts.png"))

    open_page(browser, url + "/recipes")
    wait_for(lambda: "Save as new version" in browser.page_source, what="the recipe editor")
    browser.save_screenshot(str(ARTIFACTS / "recipes.png"))
