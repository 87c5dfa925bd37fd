"""End to end in a real browser (Debian's chromium + chromedriver through Selenium) against
`station demo` in a subprocess: live view changes as parts are inspected, login, history
filter, detail page, CSV export, charts. Screenshots go to tests/_artifacts/hmi/."""

from __future__ import annotations

import csv
import time

import pytest

from tests.hmi.browser import ARTIFACTS, add_engineer, child_env, free_port, open_page, serving, wait_for

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`station demo` (simulated camera, real vision, SQLite, HMI) on a free port; an engineer account."""
    root = tmp_path_factory.mktemp("demo")
    (root / "var").mkdir()
    add_engineer(f"sqlite:///{root / 'var' / 'station.db'}", child_env())
    port = free_port()
    with serving(["demo", "--no-plc", "--root", str(root), "--hmi-port", str(port), "--interval-ms", "400"],
                 f"http://127.0.0.1:{port}/login", root / "demo.log", child_env()):
        yield f"http://127.0.0.1:{port}", root


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
    # a reject shows its reason next to the overlay (about a third of the demo's parts); banner and
    # reason are read in one go: the next part may replace both between two separate reads

    def rejected_with_reason() -> str | None:
        if banner.text != "REJECT":
            return None
        shown = browser.find_elements(By.XPATH, "//*[contains(text(),'zone') or contains(text(),'mm²')]")
        return shown[0].text if shown and banner.text == "REJECT" else None

    assert wait_for(rejected_with_reason, 60, "a rejected part with its reason")
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
