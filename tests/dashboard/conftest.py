"""Fixtures of the dashboard tests: a small synthetic run folder (every file the dashboard
reads) and, for the browser tests, headless Debian chromium driven by its own chromedriver
(nothing is downloaded; the tests skip only when no chromium binary exists)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.dashboard.browser import find_chromium, headless_chromium
from engine.dashboard.synthetic import synthetic_run

CHROMIUM, CHROMEDRIVER = find_chromium()


def require(module: str) -> None:
    """The dashboard extra is part of the test set-up (scripts/setup.sh): missing, it fails."""
    try:
        __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: pip install -e '.[dashboard]' (scripts/setup.sh)")


@pytest.fixture
def plotly_installed() -> None:
    require("plotly")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """5 layers, 8 epochs, a surgery every 3 epochs (one accepted, one rolled back)."""
    return synthetic_run(tmp_path_factory.mktemp("run"), layers=5, epochs=8, samples=24)


@pytest.fixture(scope="session")
def browser():
    """A headless chromium session with console and network logging."""
    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium chromium-driver)")
    if CHROMEDRIVER is None:
        pytest.fail(f"chromium is at {CHROMIUM} but chromedriver is missing (chromium-driver)")
    require("selenium")
    with headless_chromium() as driver:
        yield driver
