"""Open dashboards in headless Debian chromium (system ``chromium`` + ``chromedriver``, driven
by selenium from the ``dashboard`` extra; no browser download): the browser test and the
render benchmark use it, and so can you for screenshots.

Example::

    with headless_chromium() as driver:
        timings = open_dashboard(driver, "outputs/self_modifying/cnn/report.html")
        driver.save_screenshot("dashboard.png")
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.dashboard.errors import DashboardError


def find_chromium() -> tuple[str | None, str | None]:
    """Paths of the chromium binary and of chromedriver (None where absent).

    >>> isinstance(find_chromium(), tuple)
    True
    """

    def first(*names: str) -> str | None:
        for name in names:
            path = name if os.path.isabs(name) else shutil.which(name)
            if path and Path(path).is_file():
                return path
        return None

    return (
        first("/usr/bin/chromium", "chromium", "chromium-browser"),
        first("/usr/bin/chromedriver", "chromedriver"),
    )


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1800) -> Iterator[Any]:
    """A selenium Chrome driver on the system chromium, console and network logs on; quit on
    exit. :class:`DashboardError` when chromium, chromedriver or selenium is missing."""
    binary, driver_path = find_chromium()
    if binary is None or driver_path is None:
        raise DashboardError(
            f"headless chromium needs /usr/bin/chromium and /usr/bin/chromedriver (found "
            f"{binary} and {driver_path}): apt-get install chromium chromium-driver"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise DashboardError('selenium is not installed: pip install -e ".[dashboard]"') from None
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_dashboard(driver: Any, page: str | os.PathLike[str], timeout: float = 30.0) -> dict:
    """Load ``page`` and wait until every chart is drawn; returns the page's timings (ms from
    navigation start: ``library`` loaded, charts ``drawn``, ``renderMs``) and its ``errors``.
    Logs of earlier pages are dropped first."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(Path(page).resolve().as_uri())
    deadline = time.monotonic() + timeout
    while not driver.execute_script("return !!(window.dashboard && window.dashboard.ready)"):
        if time.monotonic() > deadline:
            raise DashboardError(f"{page}: not rendered within {timeout} s")
        time.sleep(0.02)
    return driver.execute_script(
        "const d = window.dashboard;"
        "return Object.assign({renderMs: d.renderMs, errors: d.errors}, d.timings);"
    )
