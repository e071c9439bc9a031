"""Run a demo script's ``main`` in this process (faster than a subprocess, and its functions
can be checked directly)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_demo(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The demo script as a module (its folder on sys.path, as when run as a script)."""
    monkeypatch.syspath_prepend(str(REPO / "demos"))
    spec = importlib.util.spec_from_file_location(f"demo_{name}", REPO / "demos" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(module: ModuleType, *args: str) -> str:
    """``main(["--fast", *args])``; returns what it printed."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert module.main(["--fast", *args]) == 0
    return printed.getvalue()
