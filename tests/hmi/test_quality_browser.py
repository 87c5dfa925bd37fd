"""The quality engineer's pages in a real Chromium (Selenium) over a history the real demo wrote
(simulated plates, the real vision pipeline, SQLite, image archive): the printable shift report
(numbers against the database, pictures loaded from inside the file, printed to PDF), and the
charts' drill-down (a real mouse click on a bar opens the history of exactly the parts behind it).
Screenshots: tests/_artifacts/hmi/shift-report*.png, drill-down-*.png."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from station.db.engine import make_engine
from station.db.models import DefectRow, InspectionRow
from station.db.shift_report import current_shift, shift_window
from station.shifts import ShiftPlan, system_zone_name
from tests.hmi.browser import ARTIFACTS, child_env, free_port, open_page, serving, wait_for
from tests.hmi.conftest import PASSWORDS
from tests.hmi.stand import REPO

pytestmark = pytest.mark.browser
PARTS = 40


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    """A history the headless demo wrote (real vision), then the HMI served over it (no new parts)."""
    root = tmp_path_factory.mktemp("quality")
    demo = subprocess.run([sys.executable, "-m", "station.cli", "demo", "--headless", "--parts", str(PARTS), "--no-plc",
                           "--root", str(root)], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-2000:]
    port = free_port()
    with serving([str(root), str(port)], f"http://127.0.0.1:{port}/login", root / "hmi.log", child_env(),
                 module="tests.hmi.serve_hmi"):
        yield f"http://127.0.0.1:{port}", f"sqlite:///{root / 'var' / 'station.db'}"


def sign_in(browser, url: str, path: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, f"{url}{path}")
    if urlparse(browser.current_url).path == "/login":  # not signed in yet (the browser is shared by the module)
        inputs = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "input"), what="login inputs")
        inputs[0].send_keys("emil")
        inputs[1].send_keys(PASSWORDS["emil"], Keys.ENTER)
    wait_for(lambda: urlparse(browser.current_url).path == path, what=f"{path} after signing in")


def query(db_url: str, stmt):
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return s.execute(stmt).all()
    finally:
        engine.dispose()


def test_shift_report_in_the_browser(station, browser):
    from selenium.webdriver.common.by import By

    url, db = station
    plan = ShiftPlan.three_shifts(system_zone_name())  # the served test station's calendar: the default
    name, day = current_shift(plan)
    since, until = shift_window(plan, name, day)
    counts = dict(query(db, select(InspectionRow.outcome, func.count()).where(
        InspectionRow.triggered_at >= since, InspectionRow.triggered_at < until).group_by(InspectionRow.outcome)))
    sign_in(browser, url, "/report")
    frame = wait_for(lambda: browser.find_element(By.ID, "report-frame"), what="the report frame")
    browser.switch_to.frame(frame)
    wait_for(lambda: browser.find_element(By.ID, "kpi-total").text, what="the report inside the page")
    browser.switch_to.default_content()
    browser.save_screenshot(str(ARTIFACTS / "shift-report-hmi.png"))

    browser.get(f"{url}/hmi/report?shift={name}&date={day.isoformat()}")
    total = wait_for(lambda: browser.find_element(By.ID, "kpi-total").text, what="the printable report")
    assert total.split() == ["parts", str(sum(counts.values()))]
    assert browser.find_element(By.ID, "kpi-reject").text.split() == ["reject", str(counts.get("reject", 0))]
    assert sum(counts.values()) == PARTS  # (a run across a shift change splits the parts: then rerun)
    images = browser.find_elements(By.CSS_SELECTOR, "#rejects img")
    assert images and all(i.get_attribute("src").startswith("data:image/jpeg;base64,") for i in images)
    wait_for(lambda: all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) > 0
                         for i in images), what="every reject picture to show")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1000, min(height + 40, 4000))
    browser.save_screenshot(str(ARTIFACTS / "shift-report.png"))
    pdf = base64.b64decode(browser.execute_cdp_cmd("Page.printToPDF", {"printBackground": True})["data"])
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type/Page") >= 1
    (ARTIFACTS / "shift-report.pdf").write_bytes(pdf)
    browser.set_window_size(1600, 1000)


def bar_click(browser, chart_index: int, data_index: int) -> None:
    """A real mouse click in the middle of bar ``data_index`` of the first series of the page's chart ``chart_index``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    el = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".nicegui-echart")[chart_index], what="the chart")
    at = wait_for(lambda: browser.execute_script("""
        const c = getElement(arguments[0]).chart; if (!c) return null;
        const v = c.getOption().series[0].data[arguments[1]]; if (v === undefined) return null;
        const top = c.convertToPixel({seriesIndex: 0}, [arguments[1], v]);
        const base = c.convertToPixel({seriesIndex: 0}, [arguments[1], 0]);
        return [top[0], (top[1] + base[1]) / 2, c.getWidth(), c.getHeight()];""", el, data_index), what="the bar's pixels")
    x, y, w, h = at
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    # ECharts takes no click while its bars still grow in (about 1 s after the data arrive), as
    # a person, who clicks a bar once it stands, would not notice: click until the page changes
    for _ in range(10):
        ActionChains(browser).move_to_element_with_offset(el, int(x - w / 2), int(y - h / 2)).click().perform()
        try:
            wait_for(lambda: urlparse(browser.current_url).path != "/charts", 1.0, "the click to open a page")
            return
        except AssertionError:
            continue
    raise AssertionError("clicking the bar opened nothing")


def history_parts(browser) -> tuple[int, set[int]]:
    from selenium.webdriver.common.by import By

    text = wait_for(lambda: [e.text for e in browser.find_elements(By.XPATH, "//*[contains(text(),'inspections match')]")],
                    what="the history's count")[0]
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".q-table tbody tr td"), what="the history's rows")
    parts = browser.execute_script(
        "return [...document.querySelectorAll('.q-table tbody tr')].map(r => r.cells[1] && r.cells[1].innerText)")
    return int(text.split()[0]), {int(p) for p in parts if p}


def test_a_click_on_a_pareto_bar_lists_exactly_the_parts_behind_it(station, browser):
    url, db = station
    sign_in(browser, url, "/charts")
    classes = wait_for(lambda: browser.execute_script(
        "const c = getElement(document.querySelectorAll('.nicegui-echart')[0]).chart;"
        "return c && c.getOption().xAxis[0].data.length ? c.getOption().xAxis[0].data : null"), what="the Pareto's classes")
    index = 0  # the tallest bar (the demo's 40 parts give a handful: one history page)
    bar_click(browser, 0, index)
    wait_for(lambda: urlparse(browser.current_url).path == "/history", what="the history after the click")
    q = {k: v[0] for k, v in parse_qs(urlparse(browser.current_url).query).items()}
    assert q["defect_class"] == classes[index]
    since, until = dt.datetime.fromisoformat(q["since"]), dt.datetime.fromisoformat(q["until"])
    behind = dict(query(db, select(InspectionRow.id, InspectionRow.part_id).where(InspectionRow.id.in_(
        select(DefectRow.inspection_id).where(DefectRow.class_name == classes[index]))).where(
        InspectionRow.triggered_at >= since, InspectionRow.triggered_at < until)))
    everything = query(db, select(func.count(func.distinct(DefectRow.inspection_id))).where(DefectRow.class_name == classes[index]))
    assert len(behind) == everything[0][0] > 0  # the window (last 24 h) holds all the demo's parts
    count, parts = history_parts(browser)
    browser.save_screenshot(str(ARTIFACTS / "drill-down-pareto.png"))
    assert count == len(behind) and parts == set(behind.values())


def test_a_click_on_an_hour_bar_lists_the_parts_of_that_hour(station, browser):
    url, db = station
    sign_in(browser, url, "/charts")
    wait_for(lambda: browser.execute_script(
        "const c = getElement(document.querySelectorAll('.nicegui-echart')[1]).chart;"
        "return c && c.getOption().series[0].data.length"), what="the hourly yield")
    bar_click(browser, 1, 0)
    wait_for(lambda: urlparse(browser.current_url).path == "/history", what="the history after the click")
    q = {k: v[0] for k, v in parse_qs(urlparse(browser.current_url).query).items()}
    since, until = dt.datetime.fromisoformat(q["since"]), dt.datetime.fromisoformat(q["until"])
    assert until - since <= dt.timedelta(hours=1) and "defect_class" not in q
    rows = query(db, select(InspectionRow.part_id).where(InspectionRow.triggered_at >= since, InspectionRow.triggered_at < until))
    first = query(db, select(func.min(InspectionRow.triggered_at)))[0][0]
    assert since <= first < until  # the first bar is the hour of the first part
    count, parts = history_parts(browser)
    browser.save_screenshot(str(ARTIFACTS / "drill-down-hour.png"))
    assert count == len(rows) > 0
    if count <= 50:
        assert parts == {p for (p,) in rows}
    else:
        assert parts <= {p for (p,) in rows} and len(parts) == 50
