"""The operator page on the smallest line-side panel, 1024x768, in a real Chromium against
`station demo`: no horizontal scrolling, and the verdict banner, the counters, the alarms and
the live image inside the screen without scrolling, on a rejected part (its reason takes a
line more than a pass). Screenshot: tests/_artifacts/hmi/operator-1024x768.png."""

from __future__ import annotations

import pytest

from tests.hmi.browser import ARTIFACTS, child_env, free_port, open_page, serving, start_chromium, wait_for

pytestmark = pytest.mark.browser

PANEL = (1024, 768)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    port = free_port()
    with serving(["demo", "--no-plc", "--recipe", "plate-threshold", "--root", str(root), "--hmi-port", str(port),
                  "--interval-ms", "300"], f"http://127.0.0.1:{port}/", root / "demo.log", child_env()):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def panel():
    """Chromium whose page area (the viewport) is exactly 1024x768, as on a kiosk panel."""
    driver = start_chromium(window="1024,768")
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * PANEL[0] - inner[0], 2 * PANEL[1] - inner[1])  # add the window's own frame
    yield driver
    driver.quit()


def box(driver, css: str) -> dict:
    return driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, height: r.height}", css)


def test_operator_page_fits_1024x768_without_scrolling(demo, panel):
    from selenium.webdriver.common.by import By

    open_page(panel, demo + "/")
    assert panel.execute_script("return [window.innerWidth, window.innerHeight]") == list(PANEL)
    banner = wait_for(lambda: panel.find_element(By.CSS_SELECTOR, ".verdict-banner"), what="the verdict banner")
    wait_for(lambda: banner.text == "REJECT", 60, "a rejected part (the banner with its reason line)")
    img = panel.find_element(By.CSS_SELECTOR, ".live-image")
    wait_for(lambda: panel.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0,
             what="the live image to load")
    scroll_width, client_width = panel.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    panel.save_screenshot(str(ARTIFACTS / "operator-1024x768.png"))
    assert scroll_width <= client_width, f"horizontal overflow: {scroll_width} > {client_width} px"
    width, height = PANEL
    for css in (".verdict-banner", ".counters", ".alarms", ".live-image", ".station-status"):
        b = box(panel, css)
        assert b["left"] >= 0 and b["right"] <= width and b["top"] >= 0 and b["bottom"] <= height, (css, b)
    assert box(panel, ".live-image")["height"] >= 240  # the image is not squeezed away to make room
    for word in ("Parts", "Pass", "Reject", "Review", "Yield", "Alarms", "Take offline"):
        element = panel.find_element(By.XPATH, f"//*[normalize-space(text())='{word}' or normalize-space(.)='{word}']")
        r = panel.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom]", element)
        assert 0 <= r[0] and r[1] <= height, (word, r)


@pytest.fixture(scope="module")
def admin_demo(tmp_path_factory):
    """`station demo` with an admin account (the longest header: all seven pages)."""
    import subprocess
    import sys

    from tests.hmi.browser import REPO

    root = tmp_path_factory.mktemp("admin-demo")
    (root / "var").mkdir()
    env = child_env()
    add = subprocess.run([sys.executable, "-m", "station.cli", "users", "add", "--role", "admin", "ada",
                          "--db", f"sqlite:///{root / 'var' / 'station.db'}"],
                         input="ada-runs-the-line\n", text=True, capture_output=True, cwd=REPO, env=env, timeout=120)
    assert add.returncode == 0, add.stderr
    port = free_port()
    with serving(["demo", "--no-plc", "--recipe", "plate-threshold", "--root", str(root), "--hmi-port", str(port),
                  "--interval-ms", "300"], f"http://127.0.0.1:{port}/login", root / "demo.log", env):
        yield f"http://127.0.0.1:{port}"


PAGES = ["/", "/review", "/history", "/charts", "/recipes", "/users", "/settings"]


def test_every_page_of_the_admin_fits_1024_wide(admin_demo, panel):
    """The engineer's and admin's header (seven links, the online badge, the user, sign-out) and
    each page under it: nothing outside 1024 px, no horizontal scrolling, every link clickable."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(panel, admin_demo + "/login?next=/users")
    inputs = wait_for(lambda: panel.find_elements(By.CSS_SELECTOR, "input"), what="login inputs")
    inputs[0].send_keys("ada")
    inputs[1].send_keys("ada-runs-the-line", Keys.ENTER)
    wait_for(lambda: "ada (admin)" in panel.page_source, what="the admin signed in")
    width, _ = PANEL
    for path in PAGES:
        open_page(panel, admin_demo + path)
        wait_for(lambda: panel.find_elements(By.CSS_SELECTOR, ".q-header"), what=f"the header of {path}")
        scroll_width = panel.execute_script("return document.documentElement.scrollWidth")
        name = "root" if path == "/" else path.strip("/")
        panel.save_screenshot(str(ARTIFACTS / f"admin-1024-{name}.png"))
        assert scroll_width <= width, f"{path}: horizontal overflow, {scroll_width} > {width} px"
        for label in ("Live", "Review", "History", "Charts", "Recipes", "Users", "Settings", "Sign out"):
            element = panel.find_element(By.CSS_SELECTOR, ".q-header").find_element(
                By.XPATH, f".//*[self::a or self::button][normalize-space(.)='{label}']")
            b = panel.execute_script("const r = arguments[0].getBoundingClientRect();"
                                     "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}", element)
            assert b["left"] >= 0 and b["right"] <= width, (path, label, b)
            hit = panel.execute_script("const r = arguments[0].getBoundingClientRect();"
                                       "const e = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);"
                                       "return arguments[0].contains(e) || e.contains(arguments[0]);", element)
            assert hit, (path, label, "covered by another element")
        header = box(panel, ".q-header")
        assert header["height"] <= 64, f"{path}: the header wraps onto a second line ({header['height']:.0f} px)"
