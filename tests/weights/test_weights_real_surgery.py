"""The weight tracker attached to a live engine: real surgery (prune, merge, expand) through
``engine.apply`` writes before/after snapshots and the change log, and comparisons align by ID."""

from __future__ import annotations

import torch
from torch import nn

from engine import NeuronEngine
from engine.plan import ExpandAction, MergeAction, Plan, PruneAction
from engine.weights import WeightTracker, compare_snapshots


def test_engine_apply_with_tracker_attached(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(),
                          nn.Linear(6, 3))  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    engine = NeuronEngine(model)
    tracker = WeightTracker(engine, tmp_path)
    engine.add_listener(tracker)
    with engine.tracking():
        model(torch.randn(16, 6)).sum().backward()
    opt.step()
    plan = Plan.create([
        PruneAction(layer="0", local_indices=[1, 5], neuron_ids=[1, 5], reason="dead"),
        MergeAction(layer="0", keep=3, remove=2, keep_id=3, remove_id=2, alpha=1.0, beta=0.0,
                    correlation=0.99, reason="redundant"),
        ExpandAction(layer="2", count=1, init="net2net", source_indices=[0], source_ids=[8],
                     reason="saturated"),
    ], engine.layout)  # fmt: skip
    record = engine.apply(plan, opt, step=40, epoch=2)

    before, after = tracker.get("before-surgery"), tracker.get("after-surgery")
    cmp = compare_snapshots(before, after, lineage=tracker.lineage)
    units = cmp.units["0"]
    assert sorted(units.removed) == [1, 5] and units.merged == {3: [2]}
    assert cmp.units["2"].added == [17] and cmp.units["2"].grown_from == {17: 8}
    # survivors' own rows did not move: unit 0 of layer "0" reports zero change
    assert cmp.neurons["0"].of(0)["l2"] == 0.0 and cmp.neurons["0"].of(7)["l2"] == 0.0
    log = tracker.changes()
    assert [e.kind for e in log] == ["prune", "merge", "expand"]
    assert log[0].step == 40 and log[0].epoch == 2
    assert log[1].max_output_change == record.actions[1].max_output_change


def test_tracker_warns_once_when_the_first_snapshot_cannot_see_consumers(tmp_path):
    import warnings

    import pytest
    from torch import nn

    from engine import NeuronEngine
    from engine.weights import WeightTracker

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    tracker = WeightTracker(NeuronEngine(model), tmp_path / "a")
    with pytest.warns(UserWarning, match="has seen no batch yet"):
        first = tracker.snapshot()

    def consumer_layers(snap):  # layers whose units index columns of the head's weight
        return [a.layer for a in snap.entry.axes["2.weight"] if a.dim == 1]

    assert consumer_layers(first) == []  # the consumer's columns are not located
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.snapshot()  # once is enough
        fine = WeightTracker(NeuronEngine(model), tmp_path / "b", example_inputs=torch.randn(2, 4))
        assert consumer_layers(fine.snapshot()) == ["0"]
