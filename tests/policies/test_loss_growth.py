"""loss_growth: GradMax-scored growth, planted singular values and a real narrow/wide pair."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mlp_fixtures import linear_chain_layout
from torch import nn

from engine import NeuronEngine, StatsSnapshot
from engine.data import load_digits_split
from engine.errors import ConfigurationError
from engine.stats.growth import GradientCross
from policies import LossGrowthPolicy, propose_actions
from policies.guards import Guard, GuardSettings


def planted(sigmas, width=8, batches=20, loss=0.5):
    """A snapshot whose layer '0' has M with singular values ``sigmas`` (6 × 5 matrix)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, width), nn.ReLU(), nn.Linear(width, 6))
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(64, 5))
    u, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    s = torch.zeros(6, 5, dtype=torch.float64)
    s[range(len(sigmas)), range(len(sigmas))] = torch.tensor(sigmas, dtype=torch.float64)
    snap = engine.snapshot(loss=loss)
    snap.layers["0"].growth = GradientCross("2", batches, (u @ s @ v.T) * batches)
    layout = linear_chain_layout(engine)
    scale = float(layout.layers["0"].consumer_matrix().norm(dim=0).median())
    return snap, layout, scale


def test_units_whose_gain_clears_the_bar_are_grown_best_first():
    snap, layout, s = planted([1.0, 0.5, 0.1, 0.01])
    gains = [s**2 * g**2 / 0.5 for g in (1.0, 0.5, 0.1, 0.01)]
    bar = (gains[2] + gains[3]) / 2  # between the third and the fourth unit
    (action,) = LossGrowthPolicy(min_unit_gain=bar, min_gain_share=0.0).propose(snap, layout)
    assert (action.layer, action.count, action.init, action.reason) == ("0", 3, "gradmax",
                                                                         "loss_gain")  # fmt: skip
    assert action.evidence["unit_gain_shares"] == pytest.approx(gains[:3], abs=1e-6)
    assert action.evidence["estimated_gain_share"] == pytest.approx(sum(gains[:3]), abs=1e-6)
    capped = LossGrowthPolicy(min_unit_gain=bar, min_gain_share=0.0, growth_fraction=0.25)
    assert capped.propose(snap, layout)[0].count == 2  # ceil(0.25·8)


def test_layers_left_alone_say_why():
    snap, layout, _ = planted([0.01])
    guard = Guard(layout)
    assert LossGrowthPolicy().propose(snap, layout, guard) == []
    assert any("below min_gain_share" in n and "'0'" in n for n in guard.notes)
    assert any("'2'" in n and "output layer" in n for n in guard.notes)
    notes: list[str] = []
    propose_actions(snap, layout, [LossGrowthPolicy()], notes=notes)
    assert any("loss_growth: layer '0' left alone" in n for n in notes)


def test_parameter_budget_and_cool_down():
    snap, layout, _ = planted([1.0, 0.9, 0.8, 0.7])
    per_unit = layout.layers["0"].params_per_unit
    budget = layout.total_params + 2 * per_unit
    policy = LossGrowthPolicy(min_gain_share=0.0, min_unit_gain=0.0, max_params=budget)
    assert policy.propose(snap, layout)[0].count == 2
    young = {snap.layers["0"].neuron_ids[0]: 1}
    guard = Guard(layout, GuardSettings(), ages=young)
    cooling = LossGrowthPolicy(min_gain_share=0.0, min_unit_gain=0.0, cooldown_epochs=3)
    assert cooling.propose(snap, layout, guard) == []
    assert any("cool-down 3" in n for n in guard.notes)


def test_the_loss_is_required():
    snap, layout, _ = planted([1.0])
    snap.metadata.pop("loss")
    with pytest.raises(ConfigurationError, match="log_epoch"):
        LossGrowthPolicy().propose(snap, layout)


def train(width: int, epochs: int = 6, seed: int = 0):
    digits = load_digits_split(seed=0)
    x, y = digits.x_train, digits.y_train
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    engine = NeuronEngine(model, growth_signal=True)
    for epoch in range(epochs):
        total = 0.0
        with engine.tracking():
            for i in range(0, len(x), 64):
                opt.zero_grad()
                loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
                loss.backward()
                opt.step()
                total += loss.item() * len(x[i : i + 64])
        engine.log_epoch(epoch, loss=total / len(x))
        if epoch < epochs - 1:
            engine.reset()
    return model, opt, engine, x


def test_a_narrow_layer_grows_a_wide_one_does_not_and_growth_keeps_the_function():
    config = {"policies": [{"name": "loss_growth"}]}
    _, _, wide, _ = train(128)
    assert wide.propose(config).expand == []
    model, opt, narrow, x = train(4)
    plan = narrow.propose(config)
    (action,) = plan.expand
    assert action.layer == "0" and action.count >= 1
    model.eval()
    before = model(x[:32]).detach()
    record = narrow.apply(plan, opt, gradmax_epsilon=1e-4)  # M comes from the engine itself
    assert model[0].out_features == 4 + action.count
    assert (model(x[:32]) - before).abs().max().item() < 1e-2
    assert record.actions[0].added_ids and not record.actions[0].exact_expected


def test_growth_signal_round_trips_through_a_saved_snapshot(tmp_path):
    _, _, engine, _ = train(4, epochs=2)
    snap = engine.snapshot(with_layout=True, loss=1.0)
    loaded = StatsSnapshot.load(snap.save(tmp_path / "s"))
    config = [LossGrowthPolicy()]
    a = propose_actions(snap, snap.model_layout, config)
    b = propose_actions(loaded, loaded.model_layout, config)
    assert [x.model_dump() for x in a] == [x.model_dump() for x in b]
