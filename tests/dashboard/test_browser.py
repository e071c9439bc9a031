"""The page in a real browser (headless Debian chromium): it renders with no console error and
no network request, the timeline lists the run's surgeries, a click on a heatmap cell opens
the neighbour view; screenshots go to outputs/dashboard/ (and the test's tmp folder)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from engine.dashboard import write_dashboard
from engine.dashboard.browser import open_dashboard

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "outputs" / "dashboard"

pytestmark = pytest.mark.usefixtures("plotly_installed")


def _open(browser, page: Path) -> dict:
    return open_dashboard(browser, page)


def _console_errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _requests(browser) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _shot(browser, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS / name)


def test_page_renders_lists_surgeries_and_opens_the_neighbour_view(browser, run_dir, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    page = write_dashboard(run_dir, tmp_path / "report.html")
    state = _open(browser, page)
    assert state["errors"] == [] and _console_errors(browser) == []
    urls = _requests(browser)
    assert urls and all(u.startswith(("file://", "data:", "blob:")) for u in urls), urls
    lines = [json.loads(x) for x in (run_dir / "changes.jsonl").read_text().splitlines()]
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline-table tr.surgery-row")
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows] == [x["layer"] for x in lines]
    assert [("rolled_back" in r.get_attribute("class")) for r in rows] == [
        x["trial"] == "rolled_back" for x in lines
    ]
    charts = (
        "weight-heatmap",
        "gradient-heatmap",
        "moving-heatmap",
        "cka-grid",
        "correlation-grid",
    )
    for chart in charts:
        assert browser.find_elements(By.CSS_SELECTOR, f"#{chart} .heatmaplayer"), chart
    view = browser.find_element(By.ID, "neighbour-view")
    assert not view.is_displayed()
    cell = browser.find_element(By.CSS_SELECTOR, "#overlap-heatmap .nsewdrag")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
    ActionChains(browser).move_to_element_with_offset(cell, 10, -10).click().perform()
    deadline = time.monotonic() + 5
    while not view.is_displayed():
        assert time.monotonic() < deadline, "a click on the overlap heatmap opened nothing"
        time.sleep(0.05)
    epochs = view.find_elements(By.CSS_SELECTOR, "tr.neighbour-row")
    assert len(epochs) == 8  # one row per recorded epoch
    chips = epochs[-1].find_elements(By.CSS_SELECTOR, ".nb")
    assert len(chips) == 10 and chips[0].find_elements(By.TAG_NAME, "canvas")  # images
    assert view.find_elements(By.CSS_SELECTOR, "tr.picked")  # the clicked epochs
    assert _console_errors(browser) == []
    _shot(browser, tmp_path, "dashboard_neighbours.png")


def test_partial_run_renders_the_panels_it_has(browser, run_dir, tmp_path):
    from selenium.webdriver.common.by import By

    part = tmp_path / "part"
    shutil.copytree(run_dir, part, ignore=shutil.ignore_patterns("dynamics", "changes.jsonl"))
    state = _open(browser, write_dashboard(part, tmp_path / "part.html"))
    assert state["errors"] == [] and _console_errors(browser) == []
    notes = [n.text for n in browser.find_elements(By.CSS_SELECTOR, "section.panel .note")]
    assert any("changes.jsonl not found" in n for n in notes)
    assert any("representations.json not found" in n for n in notes)
    assert browser.find_elements(By.CSS_SELECTOR, "#gradient-heatmap .heatmaplayer")
    _shot(browser, tmp_path, "dashboard_partial.png")
