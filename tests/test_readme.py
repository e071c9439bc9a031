"""The README's Python examples run as written: every ```python block, in order, in one
namespace (later blocks continue earlier ones), from a scratch folder that has the repository's
``policies/`` and ``demos/`` beside it (the examples name ``policies/default.yaml`` and
``demos/self_modifying.yaml``) and no ``data/`` folder (the Fashion-MNIST example must then
explain what is missing)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def readme_blocks() -> list[tuple[int, str]]:
    """``(line, code)`` of every Python block of the README."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_readme_has_python_examples():
    blocks = readme_blocks()
    assert len(blocks) >= 10
    assert "NeuronEngine" in blocks[0][1]  # the quick start comes first


def test_every_readme_example_runs_in_order(tmp_path, monkeypatch):
    for name in ("policies", "demos"):
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    printed = io.StringIO()
    for line, code in readme_blocks():
        with contextlib.redirect_stdout(printed):
            try:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
            except Exception as exc:  # name the block that broke
                pytest.fail(f"README.md block at line {line}: {type(exc).__name__}: {exc}")
    out = printed.getvalue()
    assert "Fashion-MNIST" in out and "missing" in out  # the DatasetError's message was shown
    assert (tmp_path / "outputs" / "run" / "plan.json").is_file()
    assert 0.0 <= namespace["acc"] <= 1.0
