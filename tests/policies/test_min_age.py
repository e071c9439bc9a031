"""``min_age_epochs``: a unit grown fewer epochs ago is not pruned or merged away, so a
self-modifying loop does not remove at one surgery what it grew at the previous one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import NeuronEngine, SurgerySchedule
from engine.layout import LayerLayout, ModelLayout
from engine.plan import ExpandAction, Plan
from policies import GuardSettings
from policies.guards import Guard

DEAD_ONLY = {"policies": [{"name": "dead"}]}


def test_the_guard_reserves_units_younger_than_min_age():
    layout = ModelLayout(
        {
            "fc": LayerLayout("fc", "Linear", 4, [0, 1, 7, 9]),
            "out": LayerLayout("out", "Linear", 2, [4, 5], is_output=True),
        }
    )
    ages = {7: 1, 9: 3}  # IDs 0 and 1 were there from the start
    guard = Guard(layout, GuardSettings(min_width=1, min_age_epochs=3), ages)
    assert guard.young == {"fc": [2]}
    assert guard.removable_units("fc", [0, 1, 2, 3]) == [0, 1, 3]
    assert Guard(layout, GuardSettings(min_width=1), ages).young == {}  # 0: no age limit
    with pytest.raises(ValueError, match="min_age_epochs"):
        GuardSettings(min_age_epochs=-1)


def _grow_dead_units(epoch: int) -> tuple[nn.Sequential, NeuronEngine, torch.optim.Optimizer]:
    """A model whose layer '0' got 3 never-firing units at ``epoch``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(128, 4))
    grow = ExpandAction(layer="0", count=3, init="zero_outgoing", reason="test")
    engine.apply(Plan.create([grow], engine.layout), opt, epoch=epoch)
    with torch.no_grad():
        model[0].bias[8:] = -100.0  # the grown units never fire
    engine.reset()
    with engine.tracking():
        model(torch.randn(128, 4))
    return model, engine, opt


def _pruned_ids(plan: Plan) -> set[int]:
    return {i for action in plan.prune for i in action.neuron_ids}


def test_grown_units_are_left_alone_until_old_enough():
    _, engine, _ = _grow_dead_units(epoch=4)
    grown = set(engine.neurons.ids("0")[8:])
    assert {engine.neurons.lineage[i]["epoch"] for i in grown} == {4}
    config = {**DEAD_ONLY, "guards": {"min_age_epochs": 3}}
    young = engine.propose(config, epoch=6)
    assert not _pruned_ids(young) & grown
    assert any("3 unit(s) grown fewer than 3 epochs ago" in n for n in young.metadata.notes)
    assert _pruned_ids(engine.propose(config, epoch=7)) >= grown
    assert _pruned_ids(engine.propose(DEAD_ONLY, epoch=5)) >= grown  # no age limit by default


def test_propose_dates_a_plan_by_the_last_logged_epoch():
    _, engine, _ = _grow_dead_units(epoch=0)
    grown = set(engine.neurons.ids("0")[8:])
    config = {**DEAD_ONLY, "guards": {"min_age_epochs": 2}}
    engine.log_epoch(1)
    assert not _pruned_ids(engine.propose(config)) & grown
    engine.log_epoch(2)
    assert _pruned_ids(engine.propose(config)) >= grown


def test_a_schedule_dates_its_plans_by_the_epoch_it_ends():
    model, engine, opt = _grow_dead_units(epoch=0)
    config = {**DEAD_ONLY, "guards": {"min_age_epochs": 2}}
    schedule = SurgerySchedule(engine, opt, config, every=1)
    assert schedule.epoch_end(1) is None  # only the young units are dead: nothing to do
    with engine.tracking():
        model(torch.randn(128, 4))
    record = schedule.epoch_end(2)
    assert record is not None and model[0].out_features == 8
