"""Compensated budget pruning keeps accuracy right after removal (a small, fast digits case)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

from engine import NeuronEngine
from engine.plan.actions import PruneAction
from engine.preview import preview_plan
from policies import BudgetPolicy, PolicyConfig, propose_actions
from policies.guards import GuardSettings


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    return float((model(x).argmax(1) == y).float().mean()) * 100


def test_compensated_removal_of_half_the_hidden_units_keeps_accuracy():
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(x))
    train, test = perm[:1200], perm[1200:]
    model = nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(12):
        for idx in train[torch.randperm(len(train))].split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    base = _accuracy(model, x[test], y[test])
    assert base > 90

    engine = NeuronEngine(model, correlation=True)
    with engine.tracking(), torch.no_grad():
        model(x[train])
    layout = engine.model_layout()
    config = PolicyConfig([BudgetPolicy(remove_fraction=0.5)], GuardSettings())
    actions = propose_actions(engine.snapshot(), layout, config)
    assert [(a.layer, len(a.remove)) for a in actions] == [("0", 32), ("2", 16)]
    compensated = _accuracy(preview_plan(model, actions, layout), x[test], y[test])

    # the same units removed without compensation (their mean folded into the bias only)
    plain = [
        PruneAction(layer=a.layer, local_indices=a.remove, neuron_ids=a.remove_ids,
                    constant_values=a.mean_remove, reason="plain")
        for a in actions
    ]  # fmt: skip
    uncompensated = _accuracy(preview_plan(model, plain, layout), x[test], y[test])
    assert compensated >= base - 1.5, (base, compensated)
    assert compensated > uncompensated + 2, (compensated, uncompensated)
