"""demos/checkpoint_cli.py --fast: the CLI's output loads back and equals in-process surgery."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import checkpoint
from engine.errors import ModelFactoryError
from engine.plan import Plan

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One --fast run of the demo (from an unrelated working directory)."""
    where = tmp_path_factory.mktemp("checkpoint_cli")
    out = where / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "demos" / "checkpoint_cli.py"), "--fast", "--out", str(out)],
        cwd=where, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"demo failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return out, done


def test_writes_every_output(run) -> None:
    out, _ = run
    for name in ("model.pt", "model.safetensors", "plan.json", "model-pruned.safetensors",
                 "cli-dry-run.txt", "cli-apply.txt", "commands.sh", "summary.json",
                 "summary.txt", "history.json", "report.html"):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "DRY RUN (nothing written)" in (out / "cli-dry-run.txt").read_text()
    assert "wrote " in (out / "cli-apply.txt").read_text()
    assert Plan.load(out / "plan.json").actions()


def test_cli_result_equals_in_process_surgery_and_keeps_accuracy(run) -> None:
    out, done = run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_diff_cli_vs_in_process"] <= 1e-5
    assert summary["params_after"] < summary["params_before"]
    assert summary["widths_after"] == {"fc1": 64, "fc2": 32}  # budget: half of each layer
    assert summary["prediction_agreement"] >= 0.85
    assert summary["accuracy_after"] >= summary["accuracy_before"] - 0.1
    assert f"{summary['accuracy_before']:.4f} before" in done.stdout


def test_output_loads_here_and_matches_the_original_weights(run, monkeypatch) -> None:
    """engine.checkpoint.load rebuilds the model with the factory we give for the name in the
    header (``demo_utils:mlp``; the file never chooses code), replaying the plan."""
    out, _ = run
    with pytest.raises(ModelFactoryError, match="'demo_utils:mlp' is not registered"):
        checkpoint.load(out / "model-pruned.safetensors")
    monkeypatch.syspath_prepend(str(REPO / "demos"))
    from demo_utils import mlp

    model = checkpoint.load(out / "model-pruned.safetensors", factory=mlp)
    assert model.fc1.out_features == 64 and model.fc2.out_features == 32
    original = torch.load(out / "model.pt", weights_only=True)
    assert original["fc1.weight"].shape == (128, 64)  # the input checkpoint is a plain state dict
    _, header = checkpoint.load_state(out / "model-pruned.safetensors")
    assert header is not None and header.model.factory == "demo_utils:mlp"
    assert len(header.plans) == 1
    ids = checkpoint.load_neurons(out / "model-pruned.safetensors")  # recorded, per layer
    assert ids is not None and len(ids.ids("fc1")) == 64 and len(ids.ids("fc2")) == 32


def test_the_plan_applies_once(run, tmp_path, capsys, monkeypatch) -> None:
    """The demo's plan again on its own output: refused with one line, nothing written."""
    out, _ = run
    monkeypatch.syspath_prepend(str(REPO / "demos"))
    from engine.cli import main

    again = tmp_path / "again.safetensors"
    args = ["apply", str(out / "plan.json"), str(out / "model-pruned.safetensors"),
            "--model", "demo_utils:mlp", "-o", str(again)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was already applied to" in err
    assert not again.exists()


def test_printed_commands_are_the_ones_that_ran(run) -> None:
    out, done = run
    lines = (out / "commands.sh").read_text().splitlines()[2:]
    assert len(lines) == 2
    for line in lines:
        assert line in done.stdout
        words = shlex.split(line)
        assert words[0] == "cd" and Path(words[1]) == REPO and words[3] == "PYTHONPATH=demos"
        assert words[5:8] == ["-m", "engine", "apply"]
        assert Path(words[8]) == out / "plan.json" and Path(words[9]) == out / "model.pt"
    assert lines[0].endswith("--dry-run")
    assert shlex.split(lines[1])[-2:] == ["-o", str(out / "model-pruned.safetensors")]
