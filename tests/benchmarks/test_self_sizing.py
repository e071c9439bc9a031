"""The self-sizing benchmark runs in ``--fast`` mode and writes its table, numbers and plot.

No accuracy is asserted (a fast run's numbers mean nothing); the structural facts are: every
row of every task is there, the peer was pruned to the start-wide run's widths, the fixed runs
keep their widths, trials' recovery steps are counted, and the verdicts are computed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("torch_pruning")

REPO = Path(__file__).resolve().parents[2]


def test_fast_run_writes_every_row(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "self_sizing.py"), "--fast", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results.pop("versions")["torch_pruning"] not in ("", "not installed")
    assert set(results) == {"digits_mlp", "digits_cnn", "signals_mlp"}
    for task, data in results.items():
        runs = data["runs"]
        assert set(runs) == {"fixed wide", "start wide", "Torch-Pruning", "start narrow",
                             "fixed narrow"}, task  # fmt: skip
        wide, peer = runs["start wide"][0], runs["Torch-Pruning"][0]
        shrunk = [min(a, b) for a, b in zip(wide["widths"], runs["fixed wide"][0]["widths"])]
        assert peer["widths"] == shrunk, task  # pruned to the same size (TP cannot grow)
        assert runs["fixed narrow"][0]["widths"] != runs["fixed wide"][0]["widths"]
        assert wide["steps"] >= runs["fixed wide"][0]["steps"]  # recovery steps counted
        assert all(0 <= r[0]["accuracy"] <= 100 for r in runs.values())
        assert set(data["verdicts"]) >= {"start_wide_met", "start_narrow_met"}
    table = (tmp_path / "results.md").read_text()
    assert table.count("**targets**") == 3
    assert (tmp_path / "accuracy_vs_params.png").stat().st_size > 1000
