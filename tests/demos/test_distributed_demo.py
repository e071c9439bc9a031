"""The distributed demo under torchrun (2 CPU processes, gloo), in its fast mode: one plan
for both ranks, applied on both, DDP rebuilt, ranks bitwise equal; rank 0 wrote the files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_modifies_both_ranks_the_same_way(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", str(REPO / "demos" / "distributed.py"), "--fast",
               "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["ranks_identical"] is True
    assert summary["surgeries"] >= 1
    widths = [e["widths"][0] for e in summary["epochs"]]
    assert widths[0] == 96 and widths[-1] < 96  # the planted dead units were pruned
    plans = sorted((out / "plans").glob("plan-epoch*.json"))
    assert plans and (out / "snapshot" / "stats.safetensors").is_file()
    assert (out / "report.txt").is_file()
    assert "ranks bitwise identical: True" in done.stdout
    assert done.stdout.count("surgeries; ranks") == 1  # rank 0 alone prints the summary
