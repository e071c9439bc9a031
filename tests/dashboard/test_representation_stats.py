"""``python -m engine representations RUN_DIR``: neighbour overlap and confidence as text,
checked against a direct computation on a store with one sample planted to move."""

from __future__ import annotations

import numpy as np
import torch

from engine.cli import main
from engine.dashboard.representation_stats import representation_report
from engine.dynamics import RepresentationStore
from engine.dynamics.neighbours import knn_sets


def _planted(run):
    """Ten samples on a line; between epochs sample 3 jumps to the far end."""
    store = RepresentationStore(run / "dynamics" / "representations", sample_ids=list(range(10)))
    base = torch.arange(10, dtype=torch.float32)[:, None] * torch.tensor([[1.0, 0.0]])
    moved = base.clone()
    moved[3] = torch.tensor([50.0, 0.0])
    logits = torch.zeros(10, 4)
    store.record(0, {"h": base, "out": logits})
    store.record(1, {"h": moved, "out": logits + torch.eye(4)[torch.arange(10) % 4] * 5})
    return store, base, moved


def test_overlaps_and_the_moved_sample_match_a_direct_computation(tmp_path):
    _, base, moved = _planted(tmp_path)
    report = representation_report(tmp_path, k=2, top=1)
    row = next(line for line in report.splitlines() if line.startswith("h "))
    a, b = knn_sets(base.numpy(), 2), knn_sets(moved.numpy(), 2)
    expected = np.mean([len(set(x) & set(y)) / 2 for x, y in zip(a, b, strict=True)])
    assert f"{expected:.3f}" in row.split()
    assert row.split("  ")[-1].strip().startswith("3: 0.00")  # the planted sample moved most
    entropy_uniform = np.log(4)
    assert f"0: {entropy_uniform:.3f}" in report  # epoch 0: uniform logits


def test_the_cli_prints_it_and_a_folder_without_representations_is_one_line(tmp_path, capsys):
    _planted(tmp_path / "run")
    assert main(["representations", str(tmp_path / "run"), "--k", "2"]) == 0
    assert "next-epoch overlap" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["representations", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "representations.json" in err and len(err.splitlines()) == 1
