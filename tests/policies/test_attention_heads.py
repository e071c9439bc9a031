"""Attention heads and norm groups: policies keep the width a multiple of ``num_heads`` (and of a
GroupNorm's ``num_groups``), so every head keeps one size and their plans always validate;
they say when they rounded a removal down."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine
from engine.layout import load_layout, save_layout
from engine.plan import validation_problems
from policies import DeadUnitPolicy, Guard, PolicyConfig, propose_actions
from policies.guards import GuardSettings

BUDGET = {"policies": [{"name": "budget", "settings": {"target_fraction": 0.9}}]}


class Attend(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc_in = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.fc_out = nn.Linear(16, 3)

    def forward(self, x):
        h = F.relu(self.fc_in(x))
        a, _ = self.attn(h, h, h)
        return self.fc_out(a.mean(1))


def tracked(dead: int):
    torch.manual_seed(0)
    model = Attend()
    with torch.no_grad():
        model.fc_in.bias[:dead] = -100.0  # these units never fire
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking():
        model(torch.randn(64, 5, 6))
    return model, engine


def test_the_layout_knows_the_head_count_and_keeps_it_through_a_file(tmp_path):
    _, engine = tracked(0)
    layout = engine.model_layout()
    assert layout.layers["fc_in"].width_multiple == 4 == layout.layers["attn"].width_multiple
    assert layout.layers["fc_out"].width_multiple == 1
    save_layout(layout, tmp_path / "layout")
    assert load_layout(tmp_path / "layout").layers["fc_in"].width_multiple == 4


def test_budget_keeps_heads_equal_and_its_plans_validate():
    _, engine = tracked(0)
    for fraction in (0.9, 0.75, 0.5):
        BUDGET["policies"][0]["settings"]["target_fraction"] = fraction
        plan = engine.propose(BUDGET)
        assert validation_problems(plan, engine.model_layout()) == []
        for action in plan.actions():
            assert (16 - len(action.local_indices)) % 4 == 0
        if not any(True for _ in plan.actions()):
            assert any("multiple of 4" in n for n in plan.metadata.notes)
    assert [len(a.local_indices) for a in plan.actions()] == [4]  # at 0.5: 5 rounded to 4
    BUDGET["policies"][0]["settings"]["target_fraction"] = 0.75
    plan = engine.propose(BUDGET)  # 3 units wanted: the nearest whole size is 4
    assert [len(a.local_indices) for a in plan.actions()] == [4]
    assert any("3 unit(s) rounded to 4" in n for n in plan.metadata.notes)


def test_dead_units_go_in_multiples_of_the_head_count():
    _, engine = tracked(dead=6)
    layout = engine.model_layout()
    guard = Guard(layout, GuardSettings(min_width=4))
    assert guard.divisible("fc_in", 6, coupled_ok=True) == 4
    assert guard.removable("fc_in", "prune", coupled_ok=True) == 12
    config = PolicyConfig([DeadUnitPolicy()], GuardSettings(min_width=4))
    actions = propose_actions(engine.snapshot(), layout, config)
    assert actions == []  # the attention block is coupled: dead alone leaves it (with a note)
