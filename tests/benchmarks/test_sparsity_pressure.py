"""The sparsity-pressure benchmark runs in ``--fast`` mode, prints its table and writes every
number. No accuracy is asserted (a fast run's numbers mean nothing); the structural facts are:
one run per strength and seed, pruning only removes units, and the strength-0 run is off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[2]


def test_fast_run_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "sparsity.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "sparsity_pressure.py"), "--fast", "--json",
         str(out)],
        cwd=tmp_path,  # must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"sparsity_pressure.py failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert "<1e-3 units" in done.stdout and "policy units" in done.stdout
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["settings"]["fast"] is True
    runs = record["runs"]
    assert [(r["strength"], r["seed"]) for r in runs] == [(0.0, 0), (1e-3, 0)]
    for r in runs:
        assert 0.0 <= r["test"] <= 1.0 and 0.0 <= r["pruned_1e-2_acc"] <= 1.0
        assert r["pruned_1e-3_units"] <= r["pruned_1e-2_units"] <= 192 - 8
        assert r["pruned_1e-2_params"] <= r["params"]
        assert set(r["median_norm"]) == {"fc1", "fc2"}
    assert runs[0]["median_norm"]["fc1"] > runs[1]["median_norm"]["fc1"]  # the pressure acts
    assert [s["strength"] for s in record["summary"]] == [0.0, 1e-3]
