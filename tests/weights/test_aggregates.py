"""Custom aggregates over weight trajectories: every value against the snapshot's own tensor;
a tensor absent from a snapshot reads NaN; bad aggregates are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import ConfigurationError
from engine.weights import WeightTracker
from engine.weights.aggregates import DEFAULT_AGGREGATES, trajectory_aggregates


@pytest.fixture
def snapshots(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    tracker = WeightTracker(model, tmp_path / "run", background=False)
    for epoch in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape))
        tracker.on_epoch(epoch)
    return tracker.snapshots()


def test_defaults_and_custom_functions_match_the_tensors(snapshots) -> None:
    positive = {"positive": lambda w: (w > 0).double().mean()}
    out = trajectory_aggregates(snapshots, functions=positive)
    assert set(out) == {*DEFAULT_AGGREGATES, "positive"}
    assert list(out["l2"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for i, snap in enumerate(snapshots):
        w = snap.tensor("2.weight").double()
        assert out["l2"]["2.weight"][i] == pytest.approx(float(w.norm()))
        assert out["max_abs"]["2.weight"][i] == pytest.approx(float(w.abs().max()))
        assert out["positive"]["2.weight"][i] == pytest.approx(float((w > 0).double().mean()))


def test_a_tensor_missing_from_a_snapshot_reads_nan(snapshots, tmp_path) -> None:
    other = WeightTracker(nn.Linear(3, 4), tmp_path / "other", background=False)
    other.on_epoch(5)
    out = trajectory_aggregates([*snapshots, *other.snapshots()], ["2.weight", "weight"])
    assert np.isnan(out["l2"]["2.weight"][-1]) and np.isfinite(out["l2"]["weight"][-1])
    assert np.isnan(out["l2"]["weight"][:3]).all()


def test_bad_aggregates_and_tensors_are_named(snapshots) -> None:
    with pytest.raises(ConfigurationError, match=r"aggregate 'rows' on '0\.weight'.*shape"):
        trajectory_aggregates(snapshots, ["0.weight"], functions={"rows": lambda w: w.sum(1)})
    with pytest.raises(ConfigurationError, match="expected a function"):
        trajectory_aggregates(snapshots, functions={"x": 3})
    with pytest.raises(ConfigurationError, match="in no snapshot"):
        trajectory_aggregates(snapshots, ["nope.weight"])
