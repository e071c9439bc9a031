"""The README's integration examples run as written: every ```py block of its
"Training-loop integrations" section, in order, in one namespace, from a scratch folder with
the repository's ``policies/`` beside it (``tests/test_readme.py`` runs the ```python blocks,
which need no extra)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

for _package in ("lightning", "transformers", "accelerate", "tensorboard", "sklearn"):
    pytest.importorskip(_package)

REPO = Path(__file__).resolve().parents[2]
SECTION = re.compile(r"^## Training-loop integrations.*?(?=^## )", re.S | re.M)
BLOCK = re.compile(r"```py\n(.*?)```", re.S)


def section_blocks() -> list[tuple[int, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = SECTION.search(text)
    assert section is not None, "README has no 'Training-loop integrations' section"
    start = section.start()
    return [(text[: start + m.start()].count("\n") + 2, m.group(1))
            for m in BLOCK.finditer(section.group(0))]  # fmt: skip


def test_every_integration_example_runs(tmp_path, monkeypatch):
    blocks = section_blocks()
    assert len(blocks) == 3  # Lightning, Hugging Face, TensorBoard
    (tmp_path / "policies").symlink_to(REPO / "policies", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_integrations"}
    printed = io.StringIO()
    for line, code in blocks:
        with contextlib.redirect_stdout(printed):
            try:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
            except Exception as exc:  # name the block that broke
                pytest.fail(f"README.md block at line {line}: {type(exc).__name__}: {exc}")
    lit, resumed = namespace["lit"], namespace["lit_resumed"]
    assert resumed.net[0].out_features <= lit.net[0].out_features  # resumed with the new shapes
    assert namespace["lit_model"].net[0].out_features == lit.net[0].out_features
    assert [e["step"] for e in namespace["hf_callback"].events] == [4]
    assert (tmp_path / "outputs" / "tensorboard").is_dir()
