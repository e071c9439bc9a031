"""The self-modifying demo: it changes the models mid-training, logs every change, and the
models it ends with are exactly the initial ones plus and minus the logged actions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.weights.changelog import ChangeEntry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("self_modifying")
    done = subprocess.run(
        [sys.executable, str(REPO / "demos" / "self_modifying.py"), "--fast", "--out", str(out)],
        cwd=out, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return out


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_change_log_accounts_for_the_final_widths(demo_out: Path, model: str) -> None:
    lines = (demo_out / model / "changes.jsonl").read_text().splitlines()
    logged = [ChangeEntry.model_validate_json(line) for line in lines]
    # Trials that were rolled back are logged too (what was tried), and change nothing.
    changes = [c for c in logged if c.trial != "rolled_back"]
    assert changes, "no surgery happened: the change log is empty"
    assert all(c.trial in ("accepted", "rolled_back") for c in logged)  # the demo trials
    summary = json.loads((demo_out / model / "summary.json").read_text())
    # Final widths were read from the modules; replay the log on the initial widths by hand.
    widths = dict(summary["initial_widths"])
    for c in changes:
        assert c.width_before == widths[c.layer], (c.label, c.epoch)  # the log is in order
        removed = len(c.removed_ids)
        assert removed == len(set(c.removed_ids))
        if c.kind in ("merge", "fold"):
            assert sorted(i for ids in c.merged_into.values() for i in ids) == sorted(c.removed_ids)
        if c.kind == "expand":
            assert removed == 0 and len(c.parents) == len(c.added_ids) > 0
        widths[c.layer] += len(c.added_ids) - removed
        assert c.width_after == widths[c.layer]
    assert widths == summary["final_widths"]
    assert summary["final_widths"] != summary["initial_widths"]
    # Parameters: each entry's delta chains from the initial count to the final one.
    params = summary["parameters"]["initial"]
    for c in changes:
        assert c.params_before == params, (c.label, c.epoch)
        params = c.params_after
    assert params == summary["parameters"]["final"]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_outputs_are_written(demo_out: Path, model: str) -> None:
    for name in ("architecture.png", "accuracy.png", "history.json", "summary.json"):
        assert (demo_out / model / name).stat().st_size > 0, name
    plans = sorted((demo_out / model / "plans").glob("plan-epoch*.json"))
    assert len(plans) >= 2
    assert (demo_out / "summary.md").read_text().count(f"| {model} |") == 1
