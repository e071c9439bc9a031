"""demos/training_history.py --fast: history, weight snapshots, gradient records and plots agree
with the run, and a rerun into the same folder starts the weight run afresh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from demo_loading import load_demo, run

from engine.dynamics import GradientHistory
from engine.history import TrainingHistory
from engine.weights import SnapshotStore

EPOCHS = 3  # --fast
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Path]:
    with pytest.MonkeyPatch.context() as mp:
        module = load_demo("training_history", mp)
        out = tmp_path_factory.mktemp("training_history") / "out"
        run(module, "--out", str(out))
        return module, out


def test_history_has_every_epoch_and_neuron(demo) -> None:
    _, out = demo
    history = TrainingHistory.load(out / "history.json")
    assert history.epochs == list(range(1, EPOCHS + 1))
    assert all(v is not None for v in history.metric("test_accuracy"))
    record = history.records[-1]
    assert {name: len(data["neuron_ids"]) for name, data in record.layers.items()} == {
        "fc1": 128, "fc2": 64, "fc_out": 10,
    }  # fmt: skip


def test_weight_snapshots_and_change(demo) -> None:
    _, out = demo
    snaps = SnapshotStore(out / "weights").snapshots()
    assert [s.epoch for s in snaps] == list(range(EPOCHS + 1))  # initial + one per epoch
    for snap in snaps:  # columns follow fc1's units from the first snapshot on (trajectories)
        assert [a.layer for a in snap.entry.axes["fc2.weight"]] == ["fc2", "fc1"]
    change = json.loads((out / "weight_change.json").read_text())
    assert change["a"]["epoch"] == 0 and change["b"]["epoch"] == EPOCHS


def test_gradients_recorded_at_every_step(demo) -> None:
    _, out = demo
    grads = GradientHistory.load(out / "gradients.json")
    steps_per_epoch = -(-480 // 64)  # 600-sample subset, 80 % for training, batches of 64
    assert len(grads.steps) == EPOCHS * steps_per_epoch
    assert set(grads.parameters) == {f"{m}.{p}" for m in ("fc1", "fc2", "fc_out")
                                     for p in ("weight", "bias")}  # fmt: skip


def test_plots(demo) -> None:
    _, out = demo
    names = ["total_change", "layer_change", "change_histogram", "architecture", "curves",
             "mean_activity_fc1", "weight_heatmap_fc1", "trajectories_fc1",
             *(f"activity_{layer}" for layer in ("fc1", "fc2", "fc_out")),
             *(f"gradients/gradients_{c}" for c in ("near_zero", "sign_flip_fraction")),
             "gradients/gradient_signs"]  # fmt: skip
    for name in names:
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name


def test_rerun_starts_the_weight_run_afresh(demo, tmp_path: Path) -> None:
    module, out = demo
    earlier = shutil.copytree(out / "weights", tmp_path / "weights")  # a finished run
    assert module.fresh_run_dir(earlier) == earlier and not earlier.exists()
    assert module.fresh_run_dir(tmp_path / "new") == tmp_path / "new"


def test_refuses_to_clear_a_folder_that_is_not_a_run(demo, tmp_path: Path) -> None:
    module, _ = demo
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not a weight-tracking run folder"):
        module.fresh_run_dir(tmp_path / "weights")
    assert (tmp_path / "weights" / "notes.txt").read_text() == "mine"
