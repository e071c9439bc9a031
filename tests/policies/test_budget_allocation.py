"""How the budget policy shares a parameter target: cost allocation, the bounded step, the
target relative to the current size, and the settings that choose them."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from mlp_fixtures import linear_chain_layout
from pydantic import ValidationError
from torch import nn

from engine import NeuronEngine
from policies import BudgetPolicy
from policies.guards import Guard


def _duplicated(seed: int = 0) -> nn.Sequential:
    """Layer "0": units 8..15 copy units 0..7 (free to remove); layer "2": independent."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    with torch.no_grad():
        model[0].weight[8:] = model[0].weight[:8]
        model[0].bias[8:] = model[0].bias[:8]
    return model


def _track(model: nn.Module, n: int = 1024) -> NeuronEngine:
    engine = NeuronEngine(model, correlation=True)
    gen = torch.Generator().manual_seed(1)
    with engine.tracking(), torch.no_grad():
        for x in torch.randn(n, 8, generator=gen).split(128):
            model(x)
    return engine


def _removed(actions) -> dict[str, int]:
    return {a.layer: len(a.remove) for a in actions}


def test_cost_allocation_reaches_the_target_and_prefers_the_cheap_layer():
    engine = _track(_duplicated())
    layout = linear_chain_layout(engine)
    per_unit = layout.layers["0"].params_per_unit
    target = layout.total_params - 6 * per_unit  # six copies' worth of parameters
    guard = Guard(layout)
    actions = BudgetPolicy(target_params=target).propose(engine.snapshot(), layout, guard)
    assert _removed(actions) == {"0": 6}  # only copies go: nothing from the independent layer
    (fold,) = actions
    assert fold.evidence["reached"] and fold.evidence["params_after"] <= target
    assert fold.evidence["allocation"] == "cost"
    assert all((u + 8) % 16 in fold.keep for u in fold.remove)  # each copy's twin stays
    assert fold.evidence["relative_cost"] < 1e-6
    assert any("'2' left alone: cheaper units elsewhere" in n for n in guard.notes)
    # the earlier behaviour, one common fraction, takes from both layers and costs more
    uniform = BudgetPolicy(target_params=target, allocation="uniform")
    both = uniform.propose(engine.snapshot(), layout)
    assert set(_removed(both)) == {"0", "2"}
    assert layout.params_after(_removed(both)) <= target
    assert sum(a.evidence["relative_cost"] for a in both) > 100 * fold.evidence["relative_cost"]


def test_cost_allocation_meets_a_large_target_exactly_as_params_after_counts():
    engine = _track(_duplicated(3))
    layout = linear_chain_layout(engine)
    target = int(0.55 * layout.total_params)
    actions = BudgetPolicy(target_params=target).propose(engine.snapshot(), layout)
    after = layout.params_after(_removed(actions))
    assert after <= target and actions[0].evidence["params_after"] == after
    # the shortest prefix: giving back any one removed unit misses the target
    for name in _removed(actions):
        fewer = {**_removed(actions), name: _removed(actions)[name] - 1}
        assert layout.params_after(fewer) > target or fewer[name] < 0


def test_target_fraction_is_relative_to_the_current_size():
    engine = _track(_duplicated())
    layout = linear_chain_layout(engine)
    by_fraction = BudgetPolicy(target_fraction=0.6).propose(engine.snapshot(), layout)
    by_count = BudgetPolicy(target_params=int(0.6 * layout.total_params)).propose(
        engine.snapshot(), layout
    )
    assert _removed(by_fraction) == _removed(by_count)
    assert by_fraction[0].evidence["target_params"] == int(0.6 * layout.total_params)


@pytest.mark.parametrize("allocation", ["cost", "uniform"])
def test_max_step_fraction_bounds_one_plan(allocation):
    engine = _track(_duplicated())
    layout = linear_chain_layout(engine)
    total = layout.total_params
    policy = BudgetPolicy(target_fraction=0.3, max_step_fraction=0.2, allocation=allocation)
    actions = policy.propose(engine.snapshot(), layout)
    after = layout.params_after(_removed(actions))
    assert 0.8 * total <= after <= 0.8 * total + 30  # within about one unit of the bound
    assert all(a.evidence["reached"] is False for a in actions)  # the target is further away
    assert actions[0].evidence["step_target"] == pytest.approx(0.8 * total, abs=1)
    # the fraction modes are bounded the same way
    capped = BudgetPolicy(remove_fraction=0.6, max_step_fraction=0.1).propose(
        engine.snapshot(), layout
    )
    assert layout.params_after(_removed(capped)) >= 0.9 * total


def test_a_schedule_of_bounded_steps_approaches_the_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                          nn.Linear(48, 3))  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    engine = NeuronEngine(model, correlation=True)
    start = sum(p.numel() for p in model.parameters())
    settings = {"target_params": int(0.4 * start), "max_step_fraction": 0.25, "min_samples": 50}
    config = {"policies": [{"name": "budget", "settings": settings}]}
    sizes = [start]
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        engine.reset()
        with engine.tracking():
            for x in torch.randn(512, 8, generator=gen).split(128):
                loss = F.mse_loss(model(x), torch.zeros(len(x), 3))
                opt.zero_grad()
                loss.backward()
                opt.step()
        engine.apply(engine.propose(config), opt)
        sizes.append(sum(p.numel() for p in model.parameters()))
    for before, after in pairwise(sizes):
        assert after >= 0.75 * before - 1  # each surgery removes at most a quarter
    assert sizes[1] < 0.8 * start and sizes[-1] <= 0.4 * start  # and the target is reached
    assert model(torch.randn(4, 8)).shape == (4, 3)


def test_budget_settings_take_exactly_one_budget():
    with pytest.raises(ValidationError, match="exactly one of"):
        BudgetPolicy(target_fraction=0.5, target_params=10)
    with pytest.raises(ValidationError, match="exactly one of"):
        BudgetPolicy(max_step_fraction=0.2)
    with pytest.raises(ValidationError):
        BudgetPolicy(target_fraction=1.5)
    with pytest.raises(ValidationError):
        BudgetPolicy(target_fraction=0.5, allocation="greedy")
    with pytest.raises(ValidationError):
        BudgetPolicy(target_fraction=0.5, max_step_fraction=0.0)


def test_scaled_takes_a_share_of_the_step():
    engine = _track(_duplicated())
    layout = linear_chain_layout(engine)
    total = layout.total_params
    full = BudgetPolicy(target_fraction=0.6, allocation="uniform")
    half = full.scaled(0.5)
    assert half.settings.step_scale == 0.5 and full.settings.step_scale == 1.0
    after = layout.params_after(_removed(half.propose(engine.snapshot(), layout)))
    assert 0.8 * total - 40 <= after <= 0.8 * total + 40  # half the way to 60 %
    frac = BudgetPolicy(remove_fraction=0.5).scaled(0.5).propose(engine.snapshot(), layout)
    assert _removed(frac) == {"0": 4, "2": 4}


def test_layers_without_enough_samples_or_at_their_floor_get_notes():
    engine = _track(_duplicated(), n=64)
    layout = linear_chain_layout(engine)
    guard = Guard(layout)
    assert BudgetPolicy(target_fraction=0.7).propose(engine.snapshot(), layout, guard) == []
    notes = "\n".join(guard.notes)
    assert "'0' left alone: 64 samples" in notes and "'2' left alone: 64 samples" in notes
    assert "'4' left alone: output layer" in notes
