"""Every demo runs as a script in ``--fast`` mode and writes its outputs.

To cover a new demo, add a ``Demo`` to ``DEMOS``: its script, the extra arguments, and the
files or folders (relative to ``--out``) it must leave non-empty.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Demo:
    script: str
    outputs: tuple[str, ...]
    args: tuple[str, ...] = ("--fast",)
    needs: tuple[str, ...] = ()  # optional modules; the demo is skipped without them


# Demos with a test of their own that runs the script (self_modifying, checkpoint_cli,
# fashion_mnist: it needs IDX files the test writes) are not repeated here.
DEMOS = [
    Demo(
        "demos/quickstart.py",
        outputs=("stats", "history.json", "report.txt", "plan.json"),
        needs=("sklearn",),
    ),
    Demo(
        "demos/analysis.py",
        outputs=(
            "stats",
            "report.txt",
            "analysis.json",
            "plots/activity_fc1.png",
            "plots/class_means_fc1.png",
            "plots/correlation_fc1.png",
            "plots/cka.png",
            "history.json",
            "report.html",
        ),
        needs=("sklearn",),
    ),
    Demo(
        "demos/training_history.py",
        outputs=(
            "history.json",
            "weights",
            "weight_change.json",
            "gradients.json",
            "plots/total_change.png",
            "plots/layer_change.png",
            "plots/activity_fc1.png",
            "plots/trajectories_fc1.png",
            "plots/gradients",
        ),
        needs=("sklearn",),
    ),
    Demo(
        "demos/optimization_plan.py",
        outputs=(
            "stats",
            "budget.yaml",
            "plan.json",
            "plan_default.json",
            "model.safetensors",
            "summary.txt",
            "results.json",
        ),
        needs=("sklearn",),
    ),
]


def _non_empty(path: Path) -> bool:
    if path.is_dir():
        return any(f.is_file() and f.stat().st_size > 0 for f in path.rglob("*"))
    return path.is_file() and path.stat().st_size > 0


@pytest.mark.parametrize("demo", DEMOS, ids=[Path(d.script).stem for d in DEMOS])
def test_demo_runs_and_writes_outputs(demo: Demo, tmp_path: Path) -> None:
    for module in demo.needs:
        pytest.importorskip(module)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / demo.script), *demo.args, "--out", str(out)],
        cwd=tmp_path,  # the demo must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{demo.script} failed:\n{done.stdout}\n{done.stderr}"
    for name in demo.outputs:
        assert _non_empty(out / name), f"{demo.script} did not write {name} under {out}"
    assert "Traceback" not in done.stderr
