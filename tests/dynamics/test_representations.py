"""kNN sets and overlap, the representation store, capture hooks, RepresentationDynamics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_models import FlagRaiser, count_hooks, make_cnn_bn, make_mlp, seeded
from torch import nn

from engine import NeuronEngine
from engine.dynamics import (
    NeighbourCountError,
    RepresentationDynamics,
    RepresentationShapeError,
    RepresentationStore,
    RepresentationStoreError,
    UnknownModuleError,
    capture_outputs,
    epoch_similarity,
    knn_sets,
    neighbour_overlap,
    overlap_over_time,
)
from engine.errors import EngineError


def test_knn_overlap_on_a_constructed_case_with_a_known_answer():
    # two tight clusters {0,1,2} and {3,4,5}; then sample 2 moves into the other cluster
    a = np.array([[0.0, 0], [0.1, 0], [0.25, 0], [10, 0], [10.1, 0], [10.3, 0]])
    b = a.copy()
    b[2] = [10.18, 0.0]
    sa, sb = knn_sets(a, 2), knn_sets(b, 2)
    assert [set(r) for r in sa] == [{1, 2}, {0, 2}, {0, 1}, {4, 5}, {3, 5}, {3, 4}]
    assert [set(r) for r in sb] == [{1, 3}, {0, 3}, {4, 5}, {2, 4}, {2, 3}, {2, 4}]
    assert sb[2].tolist() == [4, 5]  # nearest first
    np.testing.assert_allclose(neighbour_overlap(sa, sb), [0.5, 0.5, 0.0, 0.5, 0.5, 0.5])
    epochs, over = overlap_over_time({0: sa, 1: sb, 2: sb})
    assert epochs == [1, 2] and over[1].tolist() == [1.0] * 6
    _, sim = epoch_similarity({0: sa, 1: sb})
    assert sim[0, 1] == pytest.approx(2.5 / 6)


def test_duplicate_points_never_list_a_sample_as_its_own_neighbour():
    pts = np.zeros((5, 3))
    sets = knn_sets(pts, 4)
    assert all(i not in row for i, row in enumerate(sets))


def test_more_neighbours_than_samples_is_a_typed_error_naming_layer_and_epoch(tmp_path):
    store = RepresentationStore(tmp_path, sample_ids=[1, 2, 3])
    store.record(4, {"fc": torch.randn(3, 2)})
    with pytest.raises(NeighbourCountError, match=r"layer 'fc', epoch 4: asked for 3") as err:
        store.neighbours("fc", 3)
    assert isinstance(err.value, EngineError) and isinstance(err.value, ValueError)
    assert err.value.k == 3 and err.value.samples == 3


def test_store_round_trip_with_a_width_change_and_clear_errors(tmp_path):
    store = RepresentationStore(tmp_path, sample_ids=[7, 8, 9, 10])
    reps0, reps1 = torch.randn(4, 6), torch.randn(4, 2, 2)
    store.record(0, {"fc": reps0})
    store.record(2, {"fc": reps1, "out": torch.randn(4, 3)})
    again = RepresentationStore(tmp_path)  # reopened from its index
    assert again.epochs == [0, 2] and again.sample_ids == [7, 8, 9, 10]
    assert again.widths("fc") == {0: 6, 2: 4}
    torch.testing.assert_close(again.load(0, "fc"), reps0)
    torch.testing.assert_close(again.load(2, "fc"), reps1.reshape(4, 4))
    assert set(again.neighbours("fc", 2)) == {0, 2}
    assert again.distances(0, "fc").shape == (4, 4)
    with pytest.raises(RepresentationStoreError, match="epoch 1"):
        again.load(1, "fc")
    with pytest.raises(RepresentationStoreError, match="'nope'"):
        again.load(0, "nope")
    with pytest.raises(RepresentationShapeError, match="layer 'fc', epoch 3: expected 4"):
        again.record(3, {"fc": torch.randn(5, 2)})
    with pytest.raises(RepresentationStoreError, match="sample IDs"):
        RepresentationStore(tmp_path, sample_ids=[1, 2, 3, 4])


def test_capture_leaves_no_hook_and_restores_modes_also_when_forward_raises():
    model = FlagRaiser()
    model.train()
    out = capture_outputs(model, torch.randn(3, 4), ["fc1", "act", "fc2"])
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "fc1": (3, 6),
        "act": (3, 6),
        "fc2": (3, 2),
    }
    assert count_hooks(model) == 0 and model.training
    model.fail = True
    with pytest.raises(RuntimeError, match="planted failure"):
        capture_outputs(model, torch.randn(3, 4), ["fc1", "fc2"])
    assert count_hooks(model) == 0
    assert all(m.training for m in model.modules())
    with pytest.raises(UnknownModuleError, match="'fc9'") as err:
        capture_outputs(model, torch.randn(3, 4), ["fc1", "fc9"])
    assert isinstance(err.value, EngineError) and count_hooks(model) == 0


def test_capture_does_not_touch_batchnorm_statistics():
    model = make_cnn_bn().train()
    before = model[1].running_mean.clone()
    with seeded(5):
        capture_outputs(model, torch.randn(4, 3, 5, 5), ["2", "8"], batch_size=2)
    torch.testing.assert_close(model[1].running_mean, before)


def _narrow(model: nn.Sequential, keep: list[int]) -> None:
    """Simulated surgery on make_mlp's first hidden layer: new, narrower Linear objects."""
    idx = torch.tensor(keep)
    old0, old2 = model[0], model[2]
    fc0, fc2 = nn.Linear(old0.in_features, len(keep)), nn.Linear(len(keep), old2.out_features)
    with torch.no_grad():
        fc0.weight.copy_(old0.weight[idx])
        fc0.bias.copy_(old0.bias[idx])
        fc2.weight.copy_(old2.weight[:, idx])
        fc2.bias.copy_(old2.bias)
    model[0], model[2] = fc0, fc2


def test_representation_dynamics_through_an_engine_across_surgery(tmp_path):
    model = make_mlp()
    engine = NeuronEngine(model)
    with seeded(9):
        probe = torch.randn(16, 6)
    dyn = RepresentationDynamics(
        engine, probe, directory=tmp_path, sample_ids=range(100, 116), minibatch_size=8
    )
    assert dyn.record(0) and dyn.record(1)
    _narrow(model, keep=list(range(0, 16, 2)))  # the engine's layer names stay valid
    assert dyn.record(2)
    assert count_hooks(model) == 0
    assert dyn.store.widths("0") == {0: 16, 1: 16, 2: 8}
    epochs, overlap = dyn.fingerprint("0", k=3)
    assert epochs == [1, 2] and overlap[0].tolist() == [1.0] * 16  # no training between 0 and 1
    entry = dyn.similarity.entries[-1]
    assert entry["layers"] == ["0", "2", "4"] and entry["widths"] == [8, 12, 3]
    assert entry["minibatch_cka"] is not None
    paths = dyn.write_report("0", k=3)
    assert all(p.exists() for p in paths)
    assert (tmp_path / "layer_similarity.json").exists()
    assert count_hooks(model) == 0


def test_representation_dynamics_schedule_and_errors(tmp_path):
    model = make_mlp()
    probe = torch.randn(6, 6)
    dyn = RepresentationDynamics(model, probe, layers=["1"], epochs=[0, 5], directory=tmp_path)
    assert [dyn.record(e) for e in range(6)] == [True, False, False, False, False, True]
    with pytest.raises(NeighbourCountError, match="epoch 0"):
        dyn.fingerprint("1", k=6)
    with pytest.raises(EngineError, match="name the layers"):
        RepresentationDynamics(model, probe, directory=tmp_path / "x")
    with pytest.raises(EngineError, match="sample_ids"):
        RepresentationDynamics(model, probe, layers=["1"], sample_ids=[1], directory=tmp_path)
