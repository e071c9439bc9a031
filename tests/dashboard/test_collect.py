"""Reading a run folder: every panel's data against the files it came from; partial and bad
folders give notes or typed errors naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.dashboard import MissingRunFileError, RunFolderError, collect_run
from engine.dashboard.files import locate
from engine.errors import EngineError
from engine.weights import SnapshotStore, compare_snapshots


def test_timeline_lists_every_logged_action_with_its_verdict(run_dir: Path) -> None:
    lines = [json.loads(x) for x in (run_dir / "changes.jsonl").read_text().splitlines()]
    events = collect_run(run_dir)["panels"]["timeline"]["events"]
    actions = [(e["epoch"], a["layer"], a["kind"], a["trial"], a["width_after"])
               for e in events for a in e["actions"]]  # fmt: skip
    assert actions == [(x["epoch"], x["layer"], x["kind"], x["trial"], x["width_after"])
                       for x in lines]  # fmt: skip
    assert {a[3] for a in actions} == {"accepted", "rolled_back"}
    history = json.loads((run_dir / "history.json").read_text())["epochs"]
    first = events[0]
    assert first["before"]["loss"] == pytest.approx(
        history[first["epoch"]]["metrics"]["loss"], rel=1e-4
    )
    assert first["after_epoch"] == first["epoch"] + 1


def test_weight_change_equals_the_comparison_of_epoch_snapshots(run_dir: Path) -> None:
    data = collect_run(run_dir)["panels"]["weights"]
    snaps = SnapshotStore(run_dir / "weights").snapshots()
    assert data["epochs"] == list(range(8))  # each epoch against the one before (or initial)
    cmp = compare_snapshots(snaps[2], snaps[3]).by_module()  # epoch 1 → epoch 2
    for layer in data["layers"]:
        assert data["relative"][layer][2] == pytest.approx(cmp[layer].relative, rel=1e-4)
    means = [np.mean(data["relative"][n]) for n in data["layers"]]
    assert means == sorted(means, reverse=True)  # ranked by change


def test_representations_neighbours_are_the_k_nearest(run_dir: Path) -> None:
    from engine.dynamics import RepresentationStore

    data = collect_run(run_dir, k=3)["panels"]["representations"]
    store = RepresentationStore(run_dir / "dynamics" / "representations")
    reps = store.load(5, "features").numpy()
    d = ((reps[:, None] - reps[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :3]
    assert np.array_equal(np.array(data["per_layer"]["features"]["neighbours"]["5"]), nearest)
    overlap = np.array(data["per_layer"]["features"]["overlap"])
    assert overlap.shape == (8, 8) and np.allclose(np.diag(overlap), 1)
    logits = store.load(5, "logits").double()
    p = logits.softmax(1)
    entropy = -(p * p.log()).sum(1).numpy()
    assert np.allclose(data["confidence"]["5"], entropy, rtol=1e-4)
    assert data["images"]["height"] == 8 and len(data["labels"]) == 24


def test_partial_folder_renders_what_it_has_and_names_the_rest(run_dir, tmp_path) -> None:
    part = tmp_path / "part"
    shutil.copytree(run_dir, part, ignore=shutil.ignore_patterns("gradients.json", "dynamics"))
    panels = collect_run(part)["panels"]
    assert "gradients.json not found" in panels["gradients"]["note"]
    assert "representations.json not found" in panels["representations"]["note"]
    assert "note" not in panels["timeline"] and "note" not in panels["weights"]
    with pytest.raises(MissingRunFileError, match=r"no gradients\.json"):
        collect_run(part, strict=True)


def test_bad_folders_get_typed_errors_naming_the_file(run_dir, tmp_path) -> None:
    with pytest.raises(RunFolderError, match="no such run folder"):
        collect_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match=r"none of history\.json"):
        collect_run(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / "changes.jsonl").write_text('{"kind": "prune"}\n')
    with pytest.raises(EngineError, match=r"changes\.jsonl:1"):
        collect_run(bad)
    (bad / "changes.jsonl").unlink()
    (bad / "history.json").write_text("{not json")
    with pytest.raises(EngineError, match=r"history\.json"):
        collect_run(bad)


def test_change_log_is_found_in_the_weights_folder(run_dir, tmp_path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    (moved / "changes.jsonl").rename(moved / "weights" / "changes.jsonl")
    assert locate(moved).found("changes") == moved / "weights" / "changes.jsonl"
    assert len(collect_run(moved)["panels"]["timeline"]["events"]) == 2


def test_layer_similarity_grid_is_the_recorded_matrices(run_dir: Path) -> None:
    from engine.dynamics import LayerSimilarityHistory

    data = collect_run(run_dir)["panels"]["similarity"]
    entries = LayerSimilarityHistory.load(run_dir / "dynamics" / "layer_similarity.json").entries
    assert data["epochs"] == list(range(8)) and data["layers"][0] == ["features", "logits"]
    assert np.allclose(data["cka"], [e["cka"] for e in entries], rtol=1e-4)
    assert np.allclose(data["correlation"], [e["mean_abs_correlation"] for e in entries], rtol=1e-4)


def test_moving_average_panel_is_the_recorded_history(run_dir: Path) -> None:
    from engine.dynamics.moving_averages import MovingAverageHistory

    data = collect_run(run_dir)["panels"]["moving"]
    hist = MovingAverageHistory.load(run_dir / "moving_averages.json")
    assert data["steps"] == hist.steps.tolist() and data["parameters"][0].endswith(".weight")
    zero = hist.column("fc1.weight", "zero_grad_step")
    assert np.isnan(zero[0]) and np.allclose(data["columns"]["zero_grad_step"]["fc1.weight"][1:],
                                             zero[1:], rtol=1e-4)  # fmt: skip
    total = sum(hist.column(n, "zero_grad")[1:] for n in hist.parameters)
    assert np.allclose(data["columns"]["zero_grad"]["*"][1:], total)
    assert data["columns"]["zero_grad"]["fc1.weight"][1] == 8  # the dead input column
