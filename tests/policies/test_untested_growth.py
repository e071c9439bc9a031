"""loss_growth without a GradMax signal (``without_signal: zero_outgoing``): convolutions and
residual streams grow by ``growth_fraction`` with zero outgoing weights, the function kept,
one action per coupled group, and a trial left to judge them."""

from __future__ import annotations

import torch
from test_budget_residual import CONVS, GROUP_A, GROUP_B, _model, _tracked, _widths

from policies import LossGrowthPolicy, PolicyConfig, propose_actions
from policies.guards import GuardSettings


def test_every_expandable_layer_grows_once_per_group_and_the_function_is_kept():
    model, x = _model()
    engine = _tracked(model, x)
    policy = LossGrowthPolicy(without_signal="zero_outgoing", growth_fraction=0.5)
    snap, layout = engine.snapshot(loss=1.0), engine.model_layout()
    actions = propose_actions(snap, layout, PolicyConfig([policy], GuardSettings()))
    grown = {a.layer: a.count for a in actions}
    assert all(a.init == "zero_outgoing" and a.reason == "untested_growth" for a in actions)
    assert sum(n in grown for n in GROUP_A) == 1 and sum(n in grown for n in GROUP_B) == 1
    assert {"block1.conv1", "block2.conv1"} <= set(grown)
    before, widths = model.eval()(x[:8]).detach(), _widths(model)
    engine.log_epoch(0, loss=1.0)
    plan = engine.propose(PolicyConfig([policy], GuardSettings()))
    engine.apply(plan, None)
    after = _widths(model)
    for group in (GROUP_A, GROUP_B):  # every member of a residual stream grew together
        assert (
            len({after[n] - widths[n] for n in group}) == 1 and after[group[0]] > widths[group[0]]
        )
    assert all(after[n] > widths[n] for n in CONVS)
    assert torch.allclose(model.eval()(x[:8]), before, atol=1e-5)


def test_skip_is_the_default_and_says_why():
    model, x = _model()
    engine = _tracked(model, x)
    notes = []
    config = PolicyConfig([LossGrowthPolicy()], GuardSettings())
    actions = propose_actions(engine.snapshot(loss=1.0), engine.model_layout(), config, notes=notes)
    assert actions == [] and any("no growth signal" in n for n in notes)


def test_a_concat_branch_is_not_grown_and_says_why():
    import torch.nn.functional as F
    from torch import nn

    from engine import NeuronEngine

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv1d(2, 4, 3, padding=1), nn.Conv1d(2, 4, 3, padding=1)
            self.c, self.fc = nn.Conv1d(8, 5, 3, padding=1), nn.Linear(5, 3)

        def forward(self, x):
            h = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
            return self.fc(F.relu(self.c(h)).mean(2))

    torch.manual_seed(0)
    model = Branches()
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(32, 2, 10))
    engine.log_epoch(0, loss=1.0)
    layout = engine.model_layout()
    assert "expand" not in layout.layers["a"].supports | layout.layers["b"].supports
    policy = LossGrowthPolicy(without_signal="zero_outgoing")
    plan = engine.propose(PolicyConfig([policy], GuardSettings()))
    assert [a.layer for a in plan.actions()] == ["c"]
    assert any("'a' left alone" in n and "concat" in n for n in plan.metadata.notes)
    engine.apply(plan, None)  # valid: nothing grows through the concat
    assert (model.a.out_channels, model.c.out_channels) == (4, 8)  # c: 5 + ⌈0.5·5⌉
