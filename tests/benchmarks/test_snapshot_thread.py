"""The snapshot benchmark runs in its fast mode and reports every variant against a step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import snapshot_thread


def test_fast_run_reports_every_variant(tmp_path, capsys):
    out = tmp_path / "snap.json"
    assert snapshot_thread.main(["--fast", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"step", "sync", "background", "background_busy"}
    assert rows["step"]["per_step"] == 1.0 and rows["sync"]["per_sync"] == 1.0
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert "background_busy" in capsys.readouterr().out
